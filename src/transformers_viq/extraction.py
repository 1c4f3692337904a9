# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Extract a `datasets` dataset of images (and text) to a dataset of ViQ codes.

[`extract_codes`] writes a folder

    viq_codes.json                         which model and codebook made the codes, processor settings, source
    codes-{rank:05d}-{index:05d}.parquet   shards; one row per source sample:
                                               image_codes   list of uint16 lists, one per image of the sample
                                               image_grid_hw list of [h, w] (int32), one per image
                                               source_index  int64, the row of the source dataset
                                               ... the carried (text) columns of the source
    skipped-{rank:05d}.jsonl               samples whose images could not be read: {"source_index", "error"}

Shards are written atomically (a hidden temporary file, then a rename), so a killed run is continued by running it
again: the source indices held by the finished shards (and those recorded as skipped) are not processed again, and
nothing is lost or duplicated. `rank`/`world_size` split the dataset into contiguous blocks; each rank writes its own
shards (and skipped file), rank 0 writes `viq_codes.json`, and every rank refuses a folder made with another model,
codebook or preprocessing.

[`load_code_dataset`] reads the folder back as a `datasets.Dataset`, and refuses codes from another codebook than the
given config's.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .file_utils import atomic_path, write_json
from .image_io import open_image
from .logging_utils import get_logger, one_line, progress_bar
from .validation import IncompatibleCodebookError, check_same_codebook


logger = get_logger(__name__)

METADATA_FILE = "viq_codes.json"
FORMAT_NAME = "viq-code-dataset"
FORMAT_VERSION = 1
OUTPUT_COLUMNS = ("image_codes", "image_grid_hw", "source_index")
_SHARD_RE = re.compile(r"^codes-(\d{5,})-(\d{5,})\.parquet$")


@dataclass
class ExtractionResult:
    """What one call of [`extract_codes`] did (for its rank)."""

    output_dir: str
    rank: int
    world_size: int
    num_samples: int  # samples assigned to this rank
    num_written: int  # samples written in this call
    num_skipped: int  # unreadable samples skipped in this call
    num_already_done: int  # samples found done (written or skipped) by an earlier run
    shards: list[str] = field(default_factory=list)  # shards written in this call


# ------------------------------------------------------------------------------------------------------------------
# Source dataset
# ------------------------------------------------------------------------------------------------------------------
def load_source_dataset(dataset: Any, split: str | None = None):
    """
    A `datasets.Dataset` from a `Dataset`, a `DatasetDict` (with `split`), a folder written by `save_to_disk`, or a
    name/path for `datasets.load_dataset`. A missing local path raises `FileNotFoundError`.
    """
    import datasets

    if isinstance(dataset, (str, os.PathLike)):
        path = os.fspath(dataset)
        expanded = os.path.expanduser(path)
        if os.path.isdir(expanded) and (
            os.path.isfile(os.path.join(expanded, "state.json"))
            or os.path.isfile(os.path.join(expanded, "dataset_dict.json"))
        ):
            dataset = datasets.load_from_disk(expanded)
        elif os.path.exists(expanded):
            dataset = datasets.load_dataset(expanded, split=split)
        elif path.startswith((".", "/", "~")) or path.count("/") > 1 or os.sep in path and os.sep != "/":
            raise FileNotFoundError(f"no such dataset: {path}")
        else:
            dataset = datasets.load_dataset(path, split=split)
    if isinstance(dataset, (datasets.DatasetDict, dict)):
        if split is None:
            if len(dataset) != 1:
                raise ValueError(f"the dataset has splits {sorted(dataset)}; choose one with split=/--split")
            split = next(iter(dataset))
        if split not in dataset:
            raise ValueError(f"no split {split!r} in the dataset (it has {sorted(dataset)})")
        dataset = dataset[split]
    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(f"expected a datasets.Dataset, got {type(dataset).__name__}")
    return dataset


def _is_image_feature(feature) -> bool:
    import datasets

    return isinstance(feature, datasets.Image)


def _image_kind(feature) -> str | None:
    """'one' for an Image column, 'list' for a list of Images, None otherwise."""
    import datasets

    if _is_image_feature(feature):
        return "one"
    inner = getattr(feature, "feature", None)
    if isinstance(feature, (datasets.List, datasets.Sequence, list)) or inner is not None:
        if isinstance(feature, list):
            inner = feature[0] if feature else None
        if inner is not None and _is_image_feature(inner):
            return "list"
    return None


def _undecoded(feature):
    """The same feature with images left undecoded (dicts of bytes/path), so bad images can be caught one by one."""
    import datasets

    if _is_image_feature(feature):
        return datasets.Image(decode=False)
    if isinstance(feature, list):
        return [datasets.Image(decode=False)]
    if isinstance(feature, datasets.Sequence):
        return datasets.Sequence(datasets.Image(decode=False), length=feature.length)
    return datasets.List(datasets.Image(decode=False), length=getattr(feature, "length", -1))


def _short(error: BaseException) -> str:
    return f"{type(error).__name__}: {one_line(error)}"


def _rank_range(num_rows: int, rank: int, world_size: int) -> range:
    """The contiguous block of rows of `rank` (as `Dataset.shard(world_size, rank, contiguous=True)`)."""
    div, mod = divmod(num_rows, world_size)
    start = div * rank + min(rank, mod)
    return range(start, start + div + (1 if rank < mod else 0))


# ------------------------------------------------------------------------------------------------------------------
# Output folder
# ------------------------------------------------------------------------------------------------------------------
def _shards(output_dir: str) -> list[tuple[int, int, str]]:
    found = []
    for path in glob.glob(os.path.join(glob.escape(output_dir), "codes-*-*.parquet")):
        match = _SHARD_RE.match(os.path.basename(path))
        if match:
            found.append((int(match.group(1)), int(match.group(2)), path))
    return sorted(found)


def _skipped_file(output_dir: str, rank: int) -> str:
    return os.path.join(output_dir, f"skipped-{rank:05d}.jsonl")


def _read_skipped(path: str) -> list[dict]:
    records = []
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by a kill: that sample is simply tried again
                    continue
    except FileNotFoundError:
        pass
    return records


def _done_indices(output_dir: str) -> set[int]:
    """Source indices held by finished shards or recorded as skipped (all ranks: a changed world size is safe)."""
    import pyarrow.parquet as pq

    done: set[int] = set()
    for _, _, path in _shards(output_dir):
        done.update(pq.read_table(path, columns=["source_index"]).column("source_index").to_pylist())
    for path in glob.glob(os.path.join(glob.escape(output_dir), "skipped-*.jsonl")):
        done.update(int(record["source_index"]) for record in _read_skipped(path) if "source_index" in record)
    return done


def read_code_metadata(path: str | os.PathLike) -> dict:
    """The `viq_codes.json` of a code-dataset folder."""
    file = os.path.join(os.fspath(path), METADATA_FILE)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{path} is not a ViQ code dataset (no {METADATA_FILE})")
    with open(file, encoding="utf-8") as handle:
        meta = json.load(handle)
    if meta.get("format") != FORMAT_NAME:
        raise ValueError(f"{file}: unknown format {meta.get('format')!r}")
    return meta


_CHECKED_KEYS = ("fsq_levels", "codes_per_patch", "patch_size", "model", "processor", "image_column")


def _check_same_run(existing: dict, meta: dict, output_dir: str) -> None:
    for key in _CHECKED_KEYS:
        if existing.get(key) != meta.get(key):
            error = IncompatibleCodebookError if key in ("fsq_levels", "codes_per_patch") else ValueError
            raise error(
                f"{output_dir} holds codes made with {key}={existing.get(key)!r}, not {meta.get(key)!r}; "
                "use another folder or overwrite=True (--overwrite) to start over"
            )


# ------------------------------------------------------------------------------------------------------------------
# Extraction
# ------------------------------------------------------------------------------------------------------------------
def extract_codes(
    dataset: Any,
    output_dir: str | os.PathLike,
    model: Any,
    processor: Any = None,
    *,
    split: str | None = None,
    image_column: str | None = None,
    text_columns: list[str] | None = None,
    batch_size: int = 8,
    shard_size: int = 1000,
    limit: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    overwrite: bool = False,
    model_id: str | None = None,
    viq_size: str | None = None,
    dataset_name: str | None = None,
    progress: bool = True,
    on_shard_written: Callable[[str], None] | None = None,
) -> ExtractionResult:
    """
    Encode every image of a dataset to ViQ codes and write them, with the carried columns, as Parquet shards.

    Args:
        dataset: a `datasets.Dataset`/`DatasetDict`, a `save_to_disk` folder, or a name/path for `load_dataset`.
        output_dir: folder for the shards, `viq_codes.json` and `skipped-*.jsonl`.
        model: a `ViQModel`, or a folder/Hub id loaded with `ViQModel.from_pretrained(model, viq_size=viq_size)`.
        processor: a `ViQImageProcessor` (default: the model folder's, else the defaults).
        split: split to use when `dataset` has several.
        image_column: column of images (an Image or a list of Images; or paths/bytes). Default: the first Image column.
        text_columns: columns copied to the output. Default: every column but the image column.
        batch_size: samples per packed `model.encode` call. shard_size: samples per shard.
        limit: use only the first `limit` rows of the dataset (before splitting across ranks).
        rank, world_size: this process's contiguous block of the (limited) dataset.
        overwrite: delete this rank's shards (rank 0: also the metadata) and start over.
        model_id, viq_size: recorded in `viq_codes.json` (default: the model's name/path and preset).
        dataset_name: recorded as the source (default: the name/path given, else the dataset's own name).
        progress: show a tqdm bar over samples. on_shard_written: called with each finished shard's path.
    """
    from .pipeline import ViQPipeline

    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    if batch_size < 1 or shard_size < 1:
        raise ValueError("batch_size and shard_size must be >= 1")
    output_dir = os.fspath(output_dir)

    if isinstance(model, (str, os.PathLike)):
        model = ViQPipeline.from_pretrained(os.fspath(model), viq_size, device="cpu")
    if isinstance(model, ViQPipeline):
        model_id = model_id or model.model_id
        viq_size = viq_size or model.viq_size or model.config.preset
        processor = processor if processor is not None else model.image_processor
        model = model.model
    if processor is None:
        from .image_processing_viq import ViQImageProcessor

        processor = ViQImageProcessor()
    config = model.config
    if config.codebook_size > 2**16:
        raise ValueError(f"a codebook of {config.codebook_size} codes does not fit uint16 codes")
    if model_id is None:
        model_id = getattr(config, "_name_or_path", None) or None
    if model_id and os.path.isdir(os.path.expanduser(model_id)):
        model_id = os.path.abspath(os.path.expanduser(model_id))

    if dataset_name is None and isinstance(dataset, (str, os.PathLike)):
        dataset_name = os.fspath(dataset)
        if os.path.exists(os.path.expanduser(dataset_name)):
            dataset_name = os.path.abspath(os.path.expanduser(dataset_name))
    source = load_source_dataset(dataset, split)
    if dataset_name is None:
        dataset_name = source.info.dataset_name or source.info.builder_name
    source_fingerprint = getattr(source, "_fingerprint", None)

    features = source.features
    if image_column is None:
        image_column = next((name for name, feature in features.items() if _image_kind(feature)), None)
        if image_column is None:
            raise ValueError(f"no image column found in {list(features)}; name it with image_column=/--image-column")
    if image_column not in features:
        raise ValueError(f"no column {image_column!r} in the dataset (it has {list(features)})")
    if text_columns is None:
        text_columns = [name for name in features if name != image_column and not _image_kind(features[name])]
    for name in text_columns:
        if name not in features:
            raise ValueError(f"no column {name!r} in the dataset (it has {list(features)})")
        if name in OUTPUT_COLUMNS or name == image_column:
            raise ValueError(f"column {name!r} cannot be carried over (it clashes with an output column)")
    kind = _image_kind(features[image_column])
    if kind is not None:
        source = source.cast_column(image_column, _undecoded(features[image_column]))
    source = source.select_columns([image_column, *text_columns])

    meta = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "model": model_id,
        "viq_size": viq_size or getattr(config, "preset", None),
        "fsq_levels": [int(level) for level in config.fsq_levels],
        "codebook_size": int(config.codebook_size),
        "codes_per_patch": int(config.codes_per_patch),
        "patch_size": int(config.vision_config.patch_size),
        "processor": json.loads(processor.to_json_string()),
        "source": {
            "dataset": dataset_name,
            "split": split,
            "fingerprint": source_fingerprint,
            "num_rows": len(source),
            "limit": limit,
        },
        "image_column": image_column,
        "text_columns": list(text_columns),
        "world_size": world_size,
    }

    os.makedirs(output_dir, exist_ok=True)
    meta_path = os.path.join(output_dir, METADATA_FILE)
    if overwrite:
        for shard_rank, _, path in _shards(output_dir):
            if shard_rank == rank or (rank == 0 and shard_rank >= world_size):
                os.unlink(path)
        for path in glob.glob(os.path.join(glob.escape(output_dir), "skipped-*.jsonl")):
            match = re.search(r"skipped-(\d+)\.jsonl$", path)
            if match and (int(match.group(1)) == rank or (rank == 0 and int(match.group(1)) >= world_size)):
                os.unlink(path)
        if rank == 0 and os.path.exists(meta_path):
            os.unlink(meta_path)
    if os.path.exists(meta_path) and not (overwrite and rank != 0):
        _check_same_run(read_code_metadata(output_dir), meta, output_dir)
    elif rank == 0:
        write_json(meta_path, meta)
    for path in glob.glob(os.path.join(glob.escape(output_dir), f".codes-{rank:05d}-*.tmp")):
        os.unlink(path)  # a shard being written when a run was killed

    num_rows = len(source) if limit is None else min(int(limit), len(source))
    mine = _rank_range(num_rows, rank, world_size)
    done = _done_indices(output_dir)
    todo = [index for index in mine if index not in done]
    already = len(mine) - len(todo)
    next_shard = 1 + max((index for shard_rank, index, _ in _shards(output_dir) if shard_rank == rank), default=-1)

    out_features = _output_features(source.features, text_columns)
    result = ExtractionResult(output_dir, rank, world_size, len(mine), 0, 0, already)
    rows: list[dict] = []
    skipped_path = _skipped_file(output_dir, rank)
    device = next(model.parameters()).device
    per_patch = int(config.codes_per_patch)

    def flush():
        nonlocal next_shard, rows
        if not rows:
            return
        import datasets

        final = os.path.join(output_dir, f"codes-{rank:05d}-{next_shard:05d}.parquet")
        table = {column: [row[column] for row in rows] for column in out_features}
        with atomic_path(final) as temporary:  # a killed run leaves no half-written shard
            datasets.Dataset.from_dict(table, features=out_features).to_parquet(temporary)
        result.shards.append(final)
        result.num_written += len(rows)
        next_shard += 1
        rows = []
        if on_shard_written is not None:
            on_shard_written(final)

    def skip(index: int, error: str):
        logger.warning(f"Skipping sample {index} (source index): {error}")
        with open(skipped_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"source_index": index, "rank": rank, "error": error}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        result.num_skipped += 1

    bar = progress_bar(total=len(mine), initial=already, unit="sample", disable=not progress,
                       desc=f"extract (rank {rank})" if world_size > 1 else "extract")  # fmt: skip
    try:
        for start in range(0, len(todo), batch_size):
            indices = todo[start : start + batch_size]
            batch = source[indices]
            samples = []  # (index, [PIL images], {carried columns})
            for position, index in enumerate(indices):
                value = batch[image_column][position]
                values = value if isinstance(value, (list, tuple)) else [value]
                try:
                    images = [open_image(item) for item in values if item is not None]
                except Exception as error:  # noqa: BLE001 - unreadable image: log, record, go on
                    skip(index, _short(error))
                    continue
                carried = {name: batch[name][position] for name in text_columns}
                samples.append((index, images, carried))
            samples = _encode_batch(model, processor, samples, device, per_patch, skip)
            for index, codes, grids, carried in samples:
                rows.append({"image_codes": codes, "image_grid_hw": grids, "source_index": index, **carried})
                if len(rows) >= shard_size:
                    flush()
            bar.update(len(indices))
        flush()
    finally:
        bar.close()
    return result


def _encode_batch(model, processor, samples, device, per_patch, skip):
    """Encode the images of all samples in one packed call; a sample the processor refuses is skipped."""
    import torch

    def prepare(batch):
        flat = [image for _, images, _ in batch for image in images]
        return processor(images=flat, return_tensors="pt") if flat else None

    try:
        inputs = prepare(samples)
    except Exception:  # noqa: BLE001 - find the sample(s) at fault, skip them, encode the rest
        good = []
        for sample in samples:
            try:
                prepare([sample])
                good.append(sample)
            except Exception as error:  # noqa: BLE001
                skip(sample[0], _short(error))
        samples = good
        inputs = prepare(samples)
    if inputs is None:
        return [(index, [], [], carried) for index, _, carried in samples]
    with torch.no_grad():
        out = model.encode(
            inputs["pixel_values"].to(device, next(model.parameters()).dtype),
            inputs["image_grid_hw"].to(device),
            return_pooler_output=False,
        )
    grids = out.image_grid_hw.cpu().to(torch.int64)
    counts = (per_patch * grids[:, 0] * grids[:, 1]).tolist()
    per_image = [codes.numpy().astype(np.uint16) for codes in out.image_codes.cpu().split(counts)]
    results, position = [], 0
    for index, images, carried in samples:
        count = len(images)
        codes = per_image[position : position + count]
        grid = grids[position : position + count].to(torch.int32).tolist()
        results.append((index, codes, grid, carried))
        position += count
    return results


def _output_features(source_features, text_columns):
    import datasets

    features = {
        "image_codes": datasets.List(datasets.List(datasets.Value("uint16"))),
        "image_grid_hw": datasets.List(datasets.List(datasets.Value("int32"), length=2)),
        "source_index": datasets.Value("int64"),
    }
    for name in text_columns:
        features[name] = source_features[name]
    return datasets.Features(features)


# ------------------------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------------------------
def load_code_dataset(path: str | os.PathLike, config: Any = None):
    """
    The shards of a code-dataset folder as one `datasets.Dataset` (rows ordered by rank, then shard).

    With `config` (a `ViQConfig`, or a model with one), codes from another codebook (other `fsq_levels` or
    `codes_per_patch` than recorded in `viq_codes.json`) are refused with a `ValueError`.
    """
    import datasets

    path = os.fspath(path)
    meta = read_code_metadata(path)
    if config is not None:
        config = getattr(config, "config", config)
        check_same_codebook(
            meta.get("fsq_levels") or [],
            meta.get("codes_per_patch") or 0,
            config,
            what=f"The codes in {path} (model {meta.get('model')!r}) were",
            hint="Train with the codebook that made the codes, or extract again.",
        )
    files = [shard for _, _, shard in _shards(path)]
    if not files:
        raise ValueError(f"{path} holds no finished shards (codes-*.parquet)")
    return datasets.load_dataset("parquet", data_files=files, split="train")


__all__ = ["ExtractionResult", "extract_codes", "load_code_dataset", "load_source_dataset", "read_code_metadata"]
