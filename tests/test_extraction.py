"""`extract_codes` / `viq extract` / `load_code_dataset` on a tiny in-memory dataset (CPU, no network)."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from transformers_viq import ViQImageProcessor, ViQModel, extract_codes, load_code_dataset
from transformers_viq.cli import EXIT_OK, EXIT_USAGE, main
from transformers_viq.extraction import METADATA_FILE
from transformers_viq.testing import tiny_config


REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "examples" / "tiny-viq")


def _png(height, width, seed):
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


SIZES = [(32, 48), (40, 40), (64, 32), (16, 80), (48, 48), (33, 50), (24, 64)]
CORRUPT = 3  # row whose image is garbage bytes
DOUBLE = 1  # row with two images


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory) -> Path:
    images, captions = [], []
    for row, (height, width) in enumerate(SIZES):
        if row == CORRUPT:
            images.append([{"bytes": b"this is not an image", "path": None}])
        elif row == DOUBLE:
            images.append(
                [{"bytes": _png(height, width, row), "path": None}, {"bytes": _png(20, 30, 99), "path": None}]
            )
        else:
            images.append([{"bytes": _png(height, width, row), "path": None}])
        captions.append(f"caption {row}")
    features = datasets.Features(
        {"images": datasets.List(datasets.Image()), "caption": datasets.Value("string"), "id": datasets.Value("int32")}
    )
    data = datasets.Dataset.from_dict(
        {"images": images, "caption": captions, "id": list(range(100, 100 + len(SIZES)))}, features=features
    )
    path = tmp_path_factory.mktemp("source") / "ds"
    data.save_to_disk(str(path))
    return path


@pytest.fixture(scope="module")
def tiny():
    model = ViQModel.from_pretrained(TINY).eval()
    return model, ViQImageProcessor.from_pretrained(TINY)


def _expected_codes(model, processor, source_dir, row):
    data = datasets.load_from_disk(str(source_dir))
    images = data[row]["images"]
    inputs = processor(images=images, return_tensors="pt")
    with torch.no_grad():
        out = model.encode(inputs["pixel_values"], inputs["image_grid_hw"], return_pooler_output=False)
    counts = (4 * out.image_grid_hw[:, 0] * out.image_grid_hw[:, 1]).tolist()
    return [codes.numpy() for codes in out.image_codes.split(counts)], out.image_grid_hw.tolist()


def _indices(data) -> list[int]:
    return sorted(data["source_index"])


def test_extract_rows_codes_text_and_skipped(tmp_path, source_dir, tiny, caplog):
    model, processor = tiny
    out = tmp_path / "codes"
    with caplog.at_level(logging.WARNING, logger="transformers_viq.extraction"):
        result = extract_codes(str(source_dir), out, model, processor, batch_size=3, shard_size=2, progress=False)
    assert result.num_written == len(SIZES) - 1 and result.num_skipped == 1
    assert any(f"sample {CORRUPT}" in record.getMessage() for record in caplog.records)
    skipped = [json.loads(line) for line in (out / "skipped-00000.jsonl").read_text().splitlines()]
    assert [record["source_index"] for record in skipped] == [CORRUPT] and skipped[0]["error"]
    assert len(list(out.glob("codes-00000-*.parquet"))) == 3

    meta = json.loads((out / METADATA_FILE).read_text())
    assert meta["fsq_levels"] == [8, 8, 8, 6, 5] and meta["codebook_size"] == 15360
    assert meta["codes_per_patch"] == 4 and meta["patch_size"] == 16
    assert meta["model"] == str(Path(TINY).resolve()) and meta["processor"]["max_pixels"] == processor.max_pixels
    assert meta["source"]["dataset"] == str(source_dir) and meta["image_column"] == "images"
    assert meta["text_columns"] == ["caption", "id"]

    data = load_code_dataset(out, model.config)
    assert _indices(data) == [row for row in range(len(SIZES)) if row != CORRUPT]
    assert data.features["image_codes"].feature.feature.dtype == "uint16"
    assert str(data.data.table.schema.field("image_codes").type) == "list<item: list<item: uint16>>"
    data = data.with_format("numpy")
    for row in data:
        index = int(row["source_index"])
        assert row["caption"] == f"caption {index}" and int(row["id"]) == 100 + index
        expected, grids = _expected_codes(model, processor, source_dir, index)
        assert len(row["image_codes"]) == len(expected) == (2 if index == DOUBLE else 1)
        for got, want in zip(row["image_codes"], expected):
            np.testing.assert_array_equal(np.asarray(got, dtype=np.int64), want)
        assert np.asarray(row["image_grid_hw"]).tolist() == grids


def test_resume_after_kill_and_after_limit(tmp_path, source_dir, tiny):
    model, processor = tiny
    out = tmp_path / "codes"

    def kill(path):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract_codes(source_dir, out, model, processor, batch_size=2, shard_size=2, progress=False,
                      on_shard_written=kill)  # fmt: skip
    assert len(list(out.glob("codes-*.parquet"))) == 1
    result = extract_codes(source_dir, out, model, processor, batch_size=2, shard_size=2, progress=False)
    assert result.num_already_done == 2
    assert _indices(load_code_dataset(out)) == [row for row in range(len(SIZES)) if row != CORRUPT]

    out2 = tmp_path / "limited"
    first = extract_codes(source_dir, out2, model, processor, limit=2, progress=False)
    assert first.num_written == 2
    second = extract_codes(source_dir, out2, model, processor, progress=False)
    assert second.num_already_done == 2 and second.num_written == len(SIZES) - 3
    assert _indices(load_code_dataset(out2)) == [row for row in range(len(SIZES)) if row != CORRUPT]
    skipped = (out2 / "skipped-00000.jsonl").read_text().splitlines()
    assert len(skipped) == 1

    third = extract_codes(source_dir, out2, model, processor, progress=False, overwrite=True)
    assert third.num_already_done == 0 and third.num_written == len(SIZES) - 1


def test_two_ranks_cover_everything_once(tmp_path, source_dir, tiny):
    model, processor = tiny
    out = tmp_path / "codes"
    results = [
        extract_codes(source_dir, out, model, processor, rank=rank, world_size=2, shard_size=2, progress=False)
        for rank in (1, 0)
    ]
    assert sum(result.num_samples for result in results) == len(SIZES)
    assert list(out.glob("codes-00001-*.parquet")) and list(out.glob("codes-00000-*.parquet"))
    assert _indices(load_code_dataset(out)) == [row for row in range(len(SIZES)) if row != CORRUPT]


def test_refuses_other_codebook(tmp_path, source_dir, tiny):
    model, processor = tiny
    out = tmp_path / "codes"
    extract_codes(source_dir, out, model, processor, limit=2, progress=False)
    other = tiny_config(levels=(8, 5, 5, 5))
    with pytest.raises(ValueError, match="codebook"):
        load_code_dataset(out, other)
    other_model = ViQModel(other).eval()
    with pytest.raises(ValueError, match="fsq_levels"):  # a second run with another codebook into the same folder
        extract_codes(source_dir, out, other_model, processor, progress=False)


def test_cli_extract_env_ranks(tmp_path, source_dir, monkeypatch):
    out = tmp_path / "codes"
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert main(["extract", str(source_dir), "-o", str(out), "--model", TINY, "--device", "cpu", "--quiet"]) == 0
    assert {path.name[:11] for path in out.glob("codes-*.parquet")} == {"codes-00000", "codes-00001"}
    assert _indices(load_code_dataset(out)) == [row for row in range(len(SIZES)) if row != CORRUPT]


def test_cli_extract_end_to_end(tmp_path, source_dir, capsys):
    out = tmp_path / "codes"
    args = ["extract", str(source_dir), "-o", str(out), "--model", TINY, "--device", "cpu", "--quiet"]
    assert main([*args, "--text-columns", "caption", "--batch-size", "4", "--shard-size", "3"]) == EXIT_OK
    data = load_code_dataset(out)
    assert set(data.column_names) == {"image_codes", "image_grid_hw", "source_index", "caption"}
    assert _indices(data) == [row for row in range(len(SIZES)) if row != CORRUPT]
    capsys.readouterr()

    assert main(["extract", str(tmp_path / "missing"), "-o", str(out), "--model", TINY, "--quiet"]) == EXIT_USAGE
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("viq: error: ") and "missing" in err[0]
