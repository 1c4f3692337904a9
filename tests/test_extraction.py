"""`extract_codes` / `viq extract` / `load_code_dataset` on a tiny in-memory dataset (CPU, no network)."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from transformers_viq import ViQImageProcessor, ViQModel, extract_codes, load_code_dataset
from transformers_viq.cli import EXIT_OK, EXIT_USAGE, main
from transformers_viq.extraction import (
    METADATA_FILE,
    default_num_workers,
    pack_by_pixels,
    process_device,
    process_environment,
)
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
    assert meta["model"] == str(Path(TINY).resolve())
    assert meta["processor"]["size"]["longest_edge"] == processor.max_pixels  # max_pixels, held in size
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

    with pytest.raises(KeyboardInterrupt):  # the serial path stops right after the first shard
        extract_codes(source_dir, out, model, processor, batch_size=2, shard_size=2, progress=False, num_workers=0,
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


# ------------------------------------------------------------------------------------------------------------------
# The overlapped pipeline: same output as the serial path, resumable after a kill, one dtype per dataset
# ------------------------------------------------------------------------------------------------------------------
MIXED_SIZES = [(48, 64), (40, 40), None, (64, 32), (16, 80), "two", (2, 500), "none", (33, 50), (24, 64), None,
               (64, 64), (32, 96), (56, 40)]  # fmt: skip
MIXED_SKIPPED = [2, 6, 10]  # garbage bytes (2, 10); an aspect ratio the processor refuses (6)


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory) -> Path:
    """Samples of mixed sizes, with unreadable and refused images, two images in one sample, none in another."""
    images = []
    for row, size in enumerate(MIXED_SIZES):
        if size is None:
            images.append([{"bytes": b"not an image at all", "path": None}])
        elif size == "two":
            images.append([{"bytes": _png(40, 24, row), "path": None}, {"bytes": _png(24, 40, 50), "path": None}])
        elif size == "none":
            images.append([])
        else:
            images.append([{"bytes": _png(*size, row), "path": None}])
    features = datasets.Features({"images": datasets.List(datasets.Image()), "caption": datasets.Value("string")})
    data = datasets.Dataset.from_dict(
        {"images": images, "caption": [f"caption {row}" for row in range(len(images))]}, features=features
    )
    path = tmp_path_factory.mktemp("mixed") / "ds"
    data.save_to_disk(str(path))
    return path


MIXED_OPTIONS = dict(max_batch_pixels=48 * 48, shard_size=3, progress=False)  # several batches, several shards


def _rows_by_index(path) -> dict[int, dict]:
    rows = load_code_dataset(path).to_list()
    indices = [row["source_index"] for row in rows]
    assert len(indices) == len(set(indices)), "a sample was written twice"
    return {row["source_index"]: row for row in rows}


def _skipped_indices(path) -> list[int]:
    return sorted(json.loads(line)["source_index"] for p in path.glob("skipped-*.jsonl") for line in open(p))


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory, mixed_dir, tiny):
    model, processor = tiny
    out = tmp_path_factory.mktemp("serial") / "codes"
    result = extract_codes(mixed_dir, out, model, processor, num_workers=0, **MIXED_OPTIONS)
    return out, result


def test_overlapped_run_equals_the_serial_run_byte_for_byte(tmp_path, mixed_dir, tiny, serial_run):
    model, processor = tiny
    serial, serial_result = serial_run
    out = tmp_path / "codes"
    result = extract_codes(mixed_dir, out, model, processor, num_workers=2, **MIXED_OPTIONS)

    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in serial.iterdir())
    for name in [p.name for p in serial.glob("codes-*.parquet")] + ["skipped-00000.jsonl"]:
        assert (out / name).read_bytes() == (serial / name).read_bytes(), name
    for key in ("num_written", "num_skipped", "num_images", "source_bytes", "stored_bytes"):
        assert getattr(result, key) == getattr(serial_result, key), key
    assert len(result.shards) == 4 and result.num_images == len(MIXED_SIZES) - len(MIXED_SKIPPED)  # one has 2, one 0
    assert _skipped_indices(out) == MIXED_SKIPPED
    assert "aspect ratio" in (out / "skipped-00000.jsonl").read_text()
    rows = _rows_by_index(out)
    assert sorted(rows) == [row for row in range(len(MIXED_SIZES)) if row not in MIXED_SKIPPED]
    assert rows[7]["image_codes"] == [] and len(rows[5]["image_codes"]) == 2
    assert result.stored_bytes == sum(os.path.getsize(path) for path in result.shards)
    assert set(result.stage_seconds) == {"read_decode", "preprocess", "encode", "write"}


def test_batches_are_packed_by_pixels():
    assert pack_by_pixels([100, 100, 100, 250, 50, 50], max_batch_pixels=200) == [[0, 1], [2], [3], [4, 5]]
    assert pack_by_pixels([100, 0, 100], max_batch_pixels=150, images=[1, 0, 1]) == [[0, 1], [2]]  # text-only rides
    assert pack_by_pixels([10] * 5, max_batch_pixels=1000, max_batch_images=2) == [[0, 1], [2, 3], [4]]
    with pytest.raises(ValueError, match="image counts"):
        pack_by_pixels([1, 2], images=[1])


def test_a_stopped_overlapped_run_resumes_without_loss_or_duplicates(tmp_path, mixed_dir, tiny, serial_run):
    model, processor = tiny
    out = tmp_path / "codes"

    def stop(path):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # workers and the writer thread are busy when it stops
        extract_codes(mixed_dir, out, model, processor, num_workers=2, on_shard_written=stop, **MIXED_OPTIONS)
    assert 1 <= len(list(out.glob("codes-*.parquet"))) < 4 and not list(out.glob(".*.tmp"))
    result = extract_codes(mixed_dir, out, model, processor, num_workers=2, **MIXED_OPTIONS)
    assert result.num_already_done >= 3
    serial = _rows_by_index(serial_run[0])
    assert _rows_by_index(out) == serial and _skipped_indices(out) == MIXED_SKIPPED


def test_an_encoder_error_in_an_overlapped_run_stops_it_and_it_resumes(tmp_path, mixed_dir, tiny, serial_run,
                                                                       monkeypatch):  # fmt: skip
    """The error reaches the caller as it is, no pipeline thread is left running, and a rerun completes."""
    import threading

    model, processor = tiny
    out = tmp_path / "codes"
    encode, calls = model.encode, []

    def failing_encode(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("out of memory (simulated)")
        return encode(*args, **kwargs)

    monkeypatch.setattr(model, "encode", failing_encode)
    with pytest.raises(RuntimeError, match="simulated"):
        extract_codes(mixed_dir, out, model, processor, num_workers=2, **MIXED_OPTIONS)
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("viq-extract")]
    monkeypatch.setattr(model, "encode", encode)
    extract_codes(mixed_dir, out, model, processor, num_workers=2, **MIXED_OPTIONS)
    assert _rows_by_index(out) == _rows_by_index(serial_run[0]) and _skipped_indices(out) == MIXED_SKIPPED


KILL_AFTER_FIRST_SHARD = """
import os, signal, sys
from transformers_viq import ViQImageProcessor, ViQModel, extract_codes
model, processor = ViQModel.from_pretrained(sys.argv[1]).eval(), ViQImageProcessor.from_pretrained(sys.argv[1])
extract_codes(sys.argv[2], sys.argv[3], model, processor, num_workers=2, max_batch_pixels=48 * 48, shard_size=3,
              progress=False, on_shard_written=lambda path: os.kill(os.getpid(), signal.SIGKILL))
"""


def test_a_killed_overlapped_run_resumes_without_loss_or_duplicates(tmp_path, mixed_dir, tiny, serial_run):
    """SIGKILL of the main process as its first shard lands, while workers read and the writer thread writes."""
    model, processor = tiny
    out = tmp_path / "codes"
    process = subprocess.Popen([sys.executable, "-c", KILL_AFTER_FIRST_SHARD, TINY, str(mixed_dir), str(out)],
                               start_new_session=True, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        assert process.wait(timeout=300) == -signal.SIGKILL
    finally:
        try:  # the orphaned reader processes, if any are left
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert 1 <= len(list(out.glob("codes-*.parquet"))) < 4
    result = extract_codes(mixed_dir, out, model, processor, num_workers=2, **MIXED_OPTIONS)
    assert result.num_already_done >= 3 and not list(out.glob(".*.tmp"))
    assert _rows_by_index(out) == _rows_by_index(serial_run[0]) and _skipped_indices(out) == MIXED_SKIPPED


def test_resuming_with_another_dtype_is_refused(tmp_path, source_dir, tiny, capsys):
    model, processor = tiny
    out = tmp_path / "codes"
    extract_codes(source_dir, out, model, processor, limit=2, num_workers=0, progress=False)
    assert json.loads((out / METADATA_FILE).read_text())["dtype"] == "float32"
    bf16 = ViQModel.from_pretrained(TINY, dtype=torch.bfloat16).eval()
    with pytest.raises(ValueError, match=r"made in float32, and this run encodes in bfloat16.*must not mix") as info:
        extract_codes(source_dir, out, bf16, processor, num_workers=0, progress=False)
    assert "(dtype='float32'), or use another folder or overwrite=True to start over" in str(info.value)
    assert "--" not in str(info.value)  # the library names its arguments, the command line its flags
    args = ["extract", str(source_dir), "-o", str(out), "--model", TINY, "--device", "cpu", "--quiet"]
    capsys.readouterr()  # (the progress bars of `datasets` above)
    assert main([*args, "--dtype", "bfloat16"]) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "(--dtype float32), or use another folder or --overwrite to start over" in err[0]
    assert "=" not in err[0]
    assert len(list(out.glob("codes-*.parquet"))) == 1  # nothing was added


def test_process_environment_as_torchrun_sets_it():
    env = process_environment({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert (env.rank, env.world_size, env.local_rank, env.local_world_size) == (3, 4, 1, 2)
    assert process_environment({}) == process_environment({"RANK": "", "WORLD_SIZE": ""})
    assert (process_environment({}).rank, process_environment({}).world_size) == (0, 1)
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        process_environment({"WORLD_SIZE": "two"})
    with pytest.raises(ValueError, match=r"RANK=2 is not in \[0, WORLD_SIZE=2\)"):
        process_environment({"RANK": "2", "WORLD_SIZE": "2"})
    assert default_num_workers() >= 1 and default_num_workers(local_world_size=10_000) == 1
    assert default_num_workers(device="cpu") == 0 and default_num_workers(device=torch.device("cpu")) == 0
    if not torch.cuda.is_available():
        assert process_device("auto", 1) == "auto" and process_device("cpu", 1) == "cpu"


@pytest.mark.slow  # in-process: test_two_ranks_cover_everything_once, test_process_environment_as_torchrun_sets_it
def test_two_processes_under_torchrun_equal_one_process(tmp_path, mixed_dir, tiny, serial_run):
    """`torchrun --nproc_per_node 2 -m transformers_viq.cli extract ...` on CPU gives the dataset of one process."""
    out = tmp_path / "codes"
    torchrun = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2"]
    command = [*torchrun, "-m", "transformers_viq.cli", "extract", str(mixed_dir), "-o", str(out), "--model", TINY,
               "--device", "cpu", "--num-workers", "1", "--shard-size", "3",
               "--max-batch-pixels", str(48 * 48)]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "rank 0/2" in run.stdout and "rank 1/2" in run.stdout and "images/s" in run.stdout
    assert {p.name[:11] for p in out.glob("codes-*.parquet")} == {"codes-00000", "codes-00001"}
    assert _rows_by_index(out) == _rows_by_index(serial_run[0]) and _skipped_indices(out) == MIXED_SKIPPED


# ------------------------------------------------------------------------------------------------------------------
# LLaVA-style JSON in, code datasets that feed ViQCodesCollator out
# ------------------------------------------------------------------------------------------------------------------
def _turns(question: str, answer: str) -> list[dict]:
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


LLAVA = [
    {"id": "one", "image": "a.png", "conversations": _turns("<image>\nWhat is it?", "Noise.")},
    {"id": "two", "image": ["b.png", "sub/c.jpg"], "conversations": _turns("<image> or <image>?", "The first.")},
    {"id": "text", "conversations": _turns("Hello?", "Hi.")},
    {"id": "gone", "image": "missing.png", "conversations": _turns("<image> Where?", "Nowhere.")},
]


@pytest.fixture()
def llava_json(tmp_path) -> tuple[Path, Path]:
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for name, (height, width) in {"a.png": (64, 96), "b.png": (64, 64), "sub/c.jpg": (96, 64)}.items():
        image = np.random.default_rng(len(name)).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        Image.fromarray(image).save(folder / name)
    path = tmp_path / "json" / "llava.json"
    path.parent.mkdir()
    path.write_text(json.dumps(LLAVA))
    return path, folder


def test_cli_extracts_llava_json_with_messages_and_summary(tmp_path, llava_json, capsys):
    from transformers_viq import load_llava_json

    path, folder = llava_json
    out = tmp_path / "codes"
    args = ["extract", str(path), "-o", str(out), "--model", TINY, "--device", "cpu", "--image-folder", str(folder)]
    assert main([*args, "--num-workers", "1"]) == EXIT_OK
    summary = capsys.readouterr().out
    assert "3 sample(s) written" in summary and "1 unreadable skipped" in summary
    assert "3 image(s)" in summary and "images/s" in summary and "bytes per image (source files:" in summary

    data = load_code_dataset(out)
    assert set(data.column_names) == {"image_codes", "image_grid_hw", "source_index", "id", "messages"}
    source = load_llava_json(path, image_folder=folder)
    rows = {row["id"]: row for row in data.to_list()}
    assert sorted(rows) == ["one", "text", "two"] and _skipped_indices(out) == [3]
    assert "missing.png" in (out / "skipped-00000.jsonl").read_text()
    for row in rows.values():
        assert row["messages"] == source[row["source_index"]]["messages"]
    assert [len(rows[name]["image_codes"]) for name in ("one", "two", "text")] == [1, 2, 0]
    assert rows["one"]["image_grid_hw"] == [[4, 6]] and rows["two"]["image_grid_hw"] == [[4, 4], [6, 4]]
    meta = json.loads((out / METADATA_FILE).read_text())
    assert meta["source"]["format"] == "llava-json" and meta["source"]["image_folder"] == str(folder)
    assert meta["image_column"] == "images" and meta["text_columns"] == ["id", "messages"]


def test_llava_codes_feed_the_collator(tmp_path, llava_json, tiny):
    from transformers_viq import ViQProcessor, get_num_image_tokens
    from transformers_viq.testing import IMAGE_PAD_ID, qwen_tokenizer
    from transformers_viq.training import ViQCodesCollator

    path, folder = llava_json
    model, _ = tiny
    out = tmp_path / "codes"
    processor = ViQImageProcessor(size_divisor=32)  # the VLM's projector merges 2x2 patches
    extract_codes(path, out, model, processor, image_folder=folder, num_workers=0, progress=False)
    rows = sorted(load_code_dataset(out).to_list(), key=lambda row: row["source_index"])
    batch = ViQCodesCollator(ViQProcessor(tokenizer=qwen_tokenizer()))(rows)
    grids = [grid for row in rows for grid in row["image_grid_hw"]]
    assert batch["image_grid_hw"].tolist() == grids and len(grids) == 3
    assert int((batch["input_ids"] == IMAGE_PAD_ID).sum()) == sum(get_num_image_tokens(h, w) for h, w in grids)
    assert (batch["labels"] != -100).any(dim=1).all()  # every sample has supervised assistant tokens


def test_llava_marker_mismatch_and_image_folder_misuse(tmp_path, llava_json, source_dir, capsys):
    path, folder = llava_json
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x9", "image": "a.png", "conversations": _turns("No marker", "Hm.")}) + "\n")
    base = ["-o", str(tmp_path / "codes"), "--model", TINY, "--device", "cpu", "--quiet"]
    assert main(["extract", str(bad), *base, "--image-folder", str(folder)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "'x9'" in err and "0 <image> markers but 1 images" in err
    assert main(["extract", str(source_dir), *base, "--image-folder", str(folder)]) == EXIT_USAGE
    assert "LLaVA" in capsys.readouterr().err
    assert main(["extract", str(path), *base, "--image-folder", str(tmp_path / "nowhere")]) == EXIT_USAGE
    assert "no such image folder" in capsys.readouterr().err


def test_extract_batches_by_pixels_unless_capped_and_other_commands_keep_their_batch_size():
    from transformers_viq.cli import build_parser

    parser = build_parser()
    extract = parser.parse_args(["extract", "data", "-o", "out"])
    assert extract.batch_size is None and extract.max_batch_pixels is None and extract.num_workers is None
    assert parser.parse_args(["extract", "data", "-o", "out", "--batch-size", "3"]).batch_size == 3
    assert parser.parse_args(["encode", "a.png", "-o", "c.safetensors"]).batch_size == 4
    assert parser.parse_args(["reconstruct", "a.png", "-o", "out"]).batch_size == 4
