"""Pieces written once: the checks of codes and grids (same wording everywhere), the image reader, atomic writes,
logging."""

from __future__ import annotations

import io
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

from transformers_viq import ViQCodes, ViQImageProcessor, ViQProcessor
from transformers_viq.file_utils import atomic_path, atomic_write, write_json
from transformers_viq.image_io import check_image_file, load_rgb
from transformers_viq.logging_utils import configure, get_logger, progress_bars_enabled
from transformers_viq.models.viq.image_processing_viq import decode_image, open_image
from transformers_viq.models.viq.validation_viq import check_codes, check_grid
from transformers_viq.testing import make_tiny_model, qwen_tokenizer


# ---- validation: the model, the processor and the codes file say the same thing --------------------------------
BAD_CODES = [
    (torch.zeros(63, dtype=torch.long), [[4, 4]], r"Image 0 \(grid \[4, 4\]\) needs 64 codes"),
    (torch.zeros(68, dtype=torch.long), [[4, 4]], "4 codes are left over"),
    (torch.zeros(64), [[4, 4]], "must be an integer tensor, got dtype torch.float32"),
    (torch.zeros(2, 32, dtype=torch.long), [[4, 4]], "must be 1-D packed codes"),
    (torch.full((64,), -1), [[4, 4]], "Image 0 has (negative )?code -1"),
    (torch.zeros(64, dtype=torch.long), [[4, 4, 1]], r"must have shape \(num_images, 2\)"),
    (torch.zeros(64, dtype=torch.long), [[0, 4]], r"of image 0 is \[0, 4\]: both sides must be >= 1"),
]


@pytest.mark.parametrize("codes, grid, message", BAD_CODES)
def test_the_same_bad_codes_give_the_same_error_everywhere(codes, grid, message):
    model = make_tiny_model()
    processor = ViQProcessor(tokenizer=qwen_tokenizer())
    places = {
        "validation": lambda: check_codes(codes, check_grid(grid)),
        "model": lambda: model.embed_codes(codes, grid),
        "processor": lambda: processor(image_codes=codes, image_grid_hw=grid),
        "codes file": lambda: ViQCodes(codes, grid, [8, 8, 8, 6, 5]),
    }
    for where, call in places.items():
        with pytest.raises(ValueError, match=message):
            call()


def test_codes_outside_the_codebook_name_the_image():
    codes = torch.zeros(4 * 3, dtype=torch.long)
    codes[9] = 15360
    with pytest.raises(ValueError, match=r"Image 2 has code 15360 \(at packed position 9\) outside \[0, 15360\)"):
        check_codes(codes, [(1, 1), (1, 1), (1, 1)], codebook_size=15360)
    assert check_codes(np.arange(8, dtype=np.uint16), [(1, 2)]).dtype == torch.int64


# ---- decoding (the image processor's, used by image_io): paths, bytes, datasets dicts, PIL and arrays ----------
def test_every_source_decodes_to_the_same_array(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    path = tmp_path / "a.png"
    Image.fromarray(array).save(path)
    data = path.read_bytes()
    sources = [path, str(path), data, {"bytes": data, "path": None}, {"bytes": None, "path": str(path)},
               Image.fromarray(array), array]  # fmt: skip
    for source in sources:
        np.testing.assert_array_equal(load_rgb(source), array)
    assert decode_image(path).shape == (3, 20, 30)
    # the processor reads the same way
    processed = ViQImageProcessor(do_resize=False)(images=[data, {"bytes": data}], return_tensors="pt")
    reference = ViQImageProcessor(do_resize=False)(images=[array, array], return_tensors="pt")
    torch.testing.assert_close(processed["pixel_values"], reference["pixel_values"])


def test_exif_orientation_and_errors(tmp_path):
    image = Image.fromarray(np.zeros((10, 20, 3), np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6  # rotated 90 degrees
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    assert open_image(buffer.getvalue()).size == (10, 20)  # upright: width and height swapped
    with pytest.raises(ValueError, match="No such image file"):
        open_image(tmp_path / "missing.png")
    truncated = tmp_path / "t.png"
    truncated.write_bytes(buffer.getvalue()[:200])
    with pytest.raises(ValueError, match=f"Cannot read the image file {truncated}"):
        open_image(truncated)
    # even when another library made PIL tolerant of truncated files for the whole process
    from PIL import ImageFile

    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    noise.save(buffer, format="PNG")
    half = tmp_path / "half.png"
    half.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])  # a body cut short: PIL could fill it in
    previous, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, True
    try:
        with pytest.raises(ValueError, match="truncated"):
            open_image(half)
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ValueError, match="not an image"):
        check_image_file(tmp_path / "text.png")


# ---- file_utils: a killed or failed write leaves the old file, and no litter -------------------------------------
def test_atomic_writes(tmp_path):
    target = tmp_path / "out" / "a.txt"
    with atomic_write(target, "w") as handle:
        handle.write("first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as handle:
            handle.write("half")
            raise RuntimeError("killed")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "out" / "b.bin") as temporary:
            open(temporary, "wb").write(b"x")
            raise RuntimeError("killed")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    write_json(tmp_path / "m.json", {"psnr": float("inf"), "ok": [1.5]})
    assert (tmp_path / "m.json").read_text() == '{\n  "psnr": null,\n  "ok": [\n    1.5\n  ]\n}\n'


# ---- logging_utils: one package logger, configured in one call ----------------------------------------------------
def test_one_package_logger_and_progress_switch(capsys):
    logger = get_logger("transformers_viq.something")
    assert logger.name == "transformers_viq.something" and logger.parent.name == "transformers_viq"
    try:
        configure("info", progress=False)
        logger.info("an info line")
        assert "an info line" in capsys.readouterr().err
        assert not progress_bars_enabled()
        from transformers.utils import logging as hf_logging

        assert not hf_logging.is_progress_bar_enabled()
        import datasets.utils.logging as datasets_logging

        configure("warning", progress=False)
        assert not datasets_logging.is_progress_bar_enabled()
        logger.info("hidden")
        assert "hidden" not in capsys.readouterr().err
    finally:
        configure("warning", progress=True)
    assert progress_bars_enabled()
    assert logging.getLogger("transformers_viq").level == logging.WARNING


def test_only_hub_and_network_failures_are_reported_as_such():
    """A broken pipe or a dead worker process is not 'cannot reach the Hub' (nor exit code 4 in the CLI)."""
    import requests

    from transformers_viq.hub_utils import HubUnreachableError, hub_error_reason

    for local in (BrokenPipeError("pipe"), ConnectionResetError("worker died"), TimeoutError("lock")):
        assert hub_error_reason(local) is None
        try:
            try:
                raise local
            except OSError as inner:
                raise RuntimeError("DataLoader worker (pid 123) exited unexpectedly") from inner
        except RuntimeError as outer:
            assert hub_error_reason(outer) is None
    refused = requests.exceptions.ConnectionError("[Errno 111] Connection refused")
    assert "cannot reach the Hugging Face Hub" in hub_error_reason(refused)
    assert hub_error_reason(HubUnreachableError("offline and not cached")) == "offline and not cached"
