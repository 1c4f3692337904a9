"""The codes file: exact round trip, refusal of foreign codebooks and foreign files."""

import pytest
import torch

from transformers_viq import ViQCodes, ViQConfig
from transformers_viq.testing import make_tiny_model


def test_round_trip_is_exact(tmp_path):
    grid = torch.tensor([[3, 5], [1, 1]])
    codes = torch.randint(0, 64000, (4 * 16,))
    original = ViQCodes(codes, grid, [8, 8, 8, 5, 5, 5], model="me/viq", viq_size="64k",
                        images=[{"name": "a.png", "height": 48, "width": 80},
                                {"name": "b", "height": 16, "width": 16}])
    original.save(tmp_path / "codes.safetensors")
    loaded = ViQCodes.load(tmp_path / "codes.safetensors")
    assert torch.equal(loaded.codes, codes) and torch.equal(loaded.image_grid_hw, grid)
    assert loaded.fsq_levels == [8, 8, 8, 5, 5, 5] and loaded.codebook_size == 64000
    assert loaded.model == "me/viq" and loaded.viq_size == "64k" and loaded.images == original.images
    assert [c.numel() for c in loaded.split()] == [60, 4]
    # stored as uint16: 2 bytes per code plus a small header
    assert (tmp_path / "codes.safetensors").stat().st_size < 2 * codes.numel() + 1024


def test_foreign_codebook_is_refused():
    codes = ViQCodes(torch.zeros(4, dtype=torch.long), [[1, 1]], [8, 8, 8, 6, 5], viq_size="16k")
    codes.check_compatible(ViQConfig.from_preset("16k"))
    message = r"made with fsq_levels \[8, 8, 8, 6, 5\].*this model uses \[8, 8, 8, 5, 5, 5\]"
    with pytest.raises(ValueError, match=message):
        codes.check_compatible(ViQConfig.from_preset("64k"))


def test_grid_and_metadata_checks(tmp_path):
    with pytest.raises(ValueError, match=">= 1"):
        ViQCodes(torch.zeros(0, dtype=torch.long), [[0, 3]], [3, 3])
    import numpy as np
    from safetensors.numpy import save_file

    arrays = {"codes": np.zeros(4, dtype=np.uint16), "image_grid_hw": np.ones((1, 2), dtype=np.int32)}
    metadata = {"viq": '{"format": "viq-codes", "version": 1}'}
    save_file(arrays, str(tmp_path / "nolevels.safetensors"), metadata=metadata)
    with pytest.raises(ValueError, match="does not record the `fsq_levels`"):
        ViQCodes.load(tmp_path / "nolevels.safetensors")


def test_inconsistent_or_foreign_files_raise(tmp_path):
    with pytest.raises(ValueError, match="1 codes are left over"):
        ViQCodes(torch.zeros(5, dtype=torch.long), [[1, 1]], [3, 3])
    with pytest.raises(ValueError, match=r"outside \[0, 9\)"):
        ViQCodes(torch.full((4,), 9), [[1, 1]], [3, 3])
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a ViQ codes file"):
        ViQCodes.load(tmp_path / "junk.safetensors")
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(3, dtype=np.float32)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a ViQ codes file"):
        ViQCodes.load(tmp_path / "other.safetensors")


def test_codes_from_a_model_round_trip_through_decoding_inputs(tmp_path):
    model = make_tiny_model()
    import numpy as np

    from transformers_viq import ViQImageProcessor

    inputs = ViQImageProcessor()(images=[np.full((40, 72, 3), 120, dtype=np.uint8)], return_tensors="pt")
    out = model.encode(**inputs)
    ViQCodes(out.image_codes, out.image_grid_hw, model.config.fsq_levels).save(tmp_path / "c.safetensors")
    loaded = ViQCodes.load(tmp_path / "c.safetensors")
    loaded.check_compatible(model.config)
    torch.testing.assert_close(
        model.embed_codes(loaded.codes, loaded.image_grid_hw), model.embed_codes(out.image_codes, out.image_grid_hw)
    )


def test_records_keep_each_images_own_size_and_older_files_still_load(tmp_path):
    records = [{"name": "a.png", "height": 48, "width": 80, "source_height": 451, "source_width": 300}]
    ViQCodes(torch.zeros(4 * 15, dtype=torch.long), [[3, 5]], [3, 3], images=records).save(tmp_path / "new.st")
    loaded = ViQCodes.load(tmp_path / "new.st")
    assert loaded.images == records and loaded.source_size(0) == (451, 300)
    # a file written before the source size was recorded (same format version) loads; it has no source size
    old = [{"name": "a.png", "height": 48, "width": 80}]
    ViQCodes(torch.zeros(4 * 15, dtype=torch.long), [[3, 5]], [3, 3], images=old).save(tmp_path / "old.st")
    assert ViQCodes.load(tmp_path / "old.st").source_size(0) is None
    assert ViQCodes(torch.zeros(4, dtype=torch.long), [[1, 1]], [3, 3]).source_size(0) is None
    with pytest.raises(ValueError, match="`source_width` must be a positive integer, got 0"):
        ViQCodes(torch.zeros(4, dtype=torch.long), [[1, 1]], [3, 3],
                 images=[{"name": "a", "height": 16, "width": 16, "source_height": 9, "source_width": 0}])  # fmt: skip
