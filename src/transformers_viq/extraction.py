# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Extract a `datasets` dataset of images (and text), or LLaVA-style JSON, to a dataset of ViQ codes.

[`extract_codes`] writes a folder

    viq_codes.json                         which model, codebook and dtype made the codes, processor settings, source
    codes-{rank:05d}-{index:05d}.parquet   shards; one row per source sample:
                                               image_codes   list of uint16 lists, one per image of the sample
                                               image_grid_hw list of [h, w] (int32), one per image
                                               source_index  int64, the row of the source dataset
                                               ... the carried (text) columns of the source
    skipped-{rank:05d}.jsonl               samples whose images could not be read: {"source_index", "error"}

The work runs as a pipeline whose stages overlap (`num_workers > 0`, the default):

1. **read, decode, pre-process**: `num_workers` worker processes (a `torch.utils.data.DataLoader`) each take a few
   consecutive samples, read and decode their images and run the image processor on them;
2. **encode**: the calling process packs the samples, in source order, into batches by a pixel budget
   (`max_batch_pixels`, the processed pixels of a batch; a larger sample is encoded alone) and encodes each batch in
   one packed call. On CUDA `encode` copies the host patches through pinned memory with a non-blocking copy (no
   synchronisation), and the next batch is packed while the device works on the current one;
3. **write**: a writer thread turns finished rows into Parquet shards.

`num_workers=0` runs the same stages one after the other in the calling thread (the serial path). Both paths form
the same batches from the same samples in the same order, so they write the same shards and the same skip log, byte
for byte.

Shards are written atomically (a hidden temporary file, then a rename), so a killed run is continued by running it
again: the source indices held by the finished shards (and those recorded as skipped) are not processed again, and
nothing is lost or duplicated. `rank`/`world_size` split the dataset into contiguous blocks; each rank writes its own
shards (and skipped file), rank 0 writes `viq_codes.json`, and every rank refuses a folder made with another model,
codebook, dtype or preprocessing (bf16 and fp32 give different codes for many positions, so one dataset never mixes
them). [`process_environment`] reads the rank of this process as `torchrun` and `accelerate launch` set it.

[`load_code_dataset`] reads the folder back as a `datasets.Dataset`, and refuses codes from another codebook than the
given config's.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .file_utils import atomic_path, write_json
from .hub_utils import cached_dataset, looks_like_path, probe_dataset
from .logging_utils import get_logger, one_line, progress_bar
from .models.viq.image_processing_viq import open_image
from .models.viq.validation_viq import IncompatibleCodebookError, check_same_codebook


logger = get_logger(__name__)

METADATA_FILE = "viq_codes.json"
FORMAT_NAME = "viq-code-dataset"
FORMAT_VERSION = 1
OUTPUT_COLUMNS = ("image_codes", "image_grid_hw", "source_index")
DEFAULT_MAX_BATCH_PIXELS = 4 * 1024 * 1024  # processed pixels per packed encode call (four 1024x1024 images)
LLAVA_SUFFIXES = (".json", ".jsonl")
_SHARD_RE = re.compile(r"^codes-(\d{5,})-(\d{5,})\.parquet$")
_SAMPLES_PER_TASK = 4  # consecutive samples a worker reads, decodes and pre-processes per task
_PREFETCH_TASKS = 4  # tasks each worker may run ahead of the encoder
_MAX_PENDING_SHARDS = 2  # finished shards waiting for the writer before the encoder waits for it
_READY_BATCHES = 1  # batches the assembling thread may have ready ahead of the encoder (bounds the memory)
_MAX_WORKERS = 16


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
    num_images: int = 0  # images encoded and written in this call
    seconds: float = 0.0  # wall time of the pipeline in this call
    source_bytes: int = 0  # bytes of the source image files of the written samples (as stored: JPEG, PNG, ...)
    stored_bytes: int = 0  # bytes of the shards written in this call
    stage_seconds: dict[str, float] = field(default_factory=dict)  # busy time of each stage (workers summed)

    @property
    def images_per_second(self) -> float:
        return self.num_images / self.seconds if self.seconds > 0 else 0.0

    @property
    def stored_bytes_per_image(self) -> float:
        """Shard bytes (codes, grids and carried text) per image written."""
        return self.stored_bytes / self.num_images if self.num_images else 0.0

    @property
    def source_bytes_per_image(self) -> float:
        """Source file bytes per image written (0 when the source holds decoded images rather than files)."""
        return self.source_bytes / self.num_images if self.num_images else 0.0


# ------------------------------------------------------------------------------------------------------------------
# Processes: ranks, devices, workers
# ------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcessEnvironment:
    """Where this process stands among the processes of one job (as `torchrun` / `accelerate launch` set it)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # rank on this machine: picks the GPU
    local_world_size: int = 1  # processes on this machine: share its CPUs


def process_environment(environ: Mapping[str, str] | None = None) -> ProcessEnvironment:
    """
    This process's `RANK`, `WORLD_SIZE`, `LOCAL_RANK` and `LOCAL_WORLD_SIZE`, the variables `torchrun` and
    `accelerate launch` set for each process they start (defaults: a single process). The one place the library reads
    them.

    Raises:
        `ValueError` naming the variable when one is not an integer, or when the rank is not in `[0, WORLD_SIZE)`.
    """
    environ = os.environ if environ is None else environ

    def read(name: str, default: int) -> int:
        text = environ.get(name, "").strip()
        if not text:
            return default
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"the environment variable {name}={text!r} is not an integer") from None

    rank, world_size = read("RANK", 0), read("WORLD_SIZE", 1)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} is not in [0, WORLD_SIZE={world_size})")
    local_world_size = max(1, read("LOCAL_WORLD_SIZE", 1))
    return ProcessEnvironment(rank, world_size, read("LOCAL_RANK", 0), local_world_size)


def process_device(device: str, local_rank: int = 0) -> str:
    """The device of one process of a job: `auto` and `cuda` become `cuda:LOCAL_RANK` where CUDA is available."""
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{local_rank % max(1, torch.cuda.device_count())}"
    return device


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_num_workers(local_world_size: int = 1, device: Any = "cuda") -> int:
    """
    Reader processes per extraction process. With an accelerator: this process's share of the CPUs, less one for
    the encoder and the writer (at most 16). On the CPU: none (every stage in turn). There the encoder uses every
    core and outweighs reading, decoding and pre-processing about 100 to 1 at full width, so a reader process can
    save at most ~1% while it takes CPU time from the encoder and, forked from a process holding the model, costs
    copy-on-write page faults: measured on 2 cores, the overlapped run was 4-7% slower than the serial one
    (`benchmarks/extract.py`). Pass `num_workers` to overlap anyway.
    """
    if str(device).split(":")[0] == "cpu":
        return 0
    share = available_cpus() // max(1, local_world_size)
    return max(1, min(_MAX_WORKERS, share - 1))


# ------------------------------------------------------------------------------------------------------------------
# Source dataset
# ------------------------------------------------------------------------------------------------------------------
def check_extraction_dependencies() -> None:
    """Raise an `ImportError` naming the extra to install when `datasets` (shards, sources) is missing."""
    try:
        import datasets  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "extracting codes needs the `datasets` package, which is not installed: "
            "pip install 'transformers-viq[eval]' (or pip install datasets)"
        ) from error


def is_llava_json(dataset: Any) -> bool:
    """Whether `dataset` is the path of a LLaVA-style `.json`/`.jsonl` file."""
    if not isinstance(dataset, (str, os.PathLike)):
        return False
    path = os.path.expanduser(os.fspath(dataset))
    return path.lower().endswith(LLAVA_SUFFIXES) and os.path.isfile(path)


def load_source_dataset(dataset: Any, split: str | None = None, image_folder: str | os.PathLike | None = None):
    """
    A `datasets.Dataset` from a `Dataset`, a `DatasetDict` (with `split`), a folder written by `save_to_disk`, a
    LLaVA-style `.json`/`.jsonl` file (read by `llava_data.load_llava_json`, image paths relative to `image_folder`),
    or a name/path for `datasets.load_dataset`. A missing local path raises `FileNotFoundError`.
    """
    import datasets

    if is_llava_json(dataset):
        from .llava_data import load_llava_json

        return load_llava_json(os.path.expanduser(os.fspath(dataset)), image_folder=image_folder)
    if image_folder is not None:
        raise ValueError("image_folder (--image-folder) applies to LLaVA-style .json/.jsonl files only")
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
        elif looks_like_path(path) or path.lower().endswith(LLAVA_SUFFIXES):
            raise FileNotFoundError(f"no such dataset: {path}")
        else:  # a Hub dataset: fail at once, not after datasets' retries, when it cannot be reached and is not cached
            if not cached_dataset(path):
                probe_dataset(path)  # offline: raises without asking
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


_ADDRESS_RE = re.compile(r" at 0x[0-9a-fA-F]+")


def _short(error: BaseException) -> str:
    """An error on one line, without the memory addresses of object reprs (the skip log is the same run to run)."""
    return _ADDRESS_RE.sub("", f"{type(error).__name__}: {one_line(error)}")


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


_CHECKED_KEYS = ("fsq_levels", "codes_per_patch", "patch_size", "model", "dtype", "processor", "image_column")


def _check_same_run(existing: dict, meta: dict, output_dir: str) -> None:
    start_over = "use another folder or overwrite=True to start over"
    for key in _CHECKED_KEYS:
        if existing.get(key) == meta.get(key):
            continue
        if key == "dtype":
            made = existing.get("dtype")
            made = f"in {made}" if made else "by a version that did not record the dtype"
            raise ValueError(
                f"{output_dir} holds codes made {made}, and this run encodes in {meta['dtype']}: bf16 and fp32 give "
                f"different codes for many positions, so one dataset must not mix them. Run with the dtype the "
                f"folder was made with" + (f" (dtype='{existing['dtype']}')" if existing.get("dtype") else "")
                + f", or {start_over}"
            )
        error = IncompatibleCodebookError if key in ("fsq_levels", "codes_per_patch") else ValueError
        raise error(
            f"{output_dir} holds codes made with {key}={existing.get(key)!r}, not {meta.get(key)!r}; {start_over}"
        )


# ------------------------------------------------------------------------------------------------------------------
# The pipeline's pieces: batches by pixels, the reader (in the workers), the encoder, the shard writer
# ------------------------------------------------------------------------------------------------------------------
def _starts_new_batch(batch_pixels: int, batch_images: int, pixels: int, images: int, max_batch_pixels: int,
                      max_batch_images: int | None) -> bool:  # fmt: skip
    """The one packing rule: a sample with images opens a new batch when it would overflow a non-empty one."""
    if not (batch_images and images):
        return False
    too_many = max_batch_images is not None and batch_images + images > max_batch_images
    return batch_pixels + pixels > max_batch_pixels or too_many


def pack_by_pixels(
    pixels: Sequence[int],
    max_batch_pixels: int = DEFAULT_MAX_BATCH_PIXELS,
    images: Sequence[int] | None = None,
    max_batch_images: int | None = None,
) -> list[list[int]]:
    """
    Consecutive samples grouped into batches by a pixel budget, as [`extract_codes`] groups them.

    Args:
        pixels: the processed pixels of each sample (all its images, padding included).
        max_batch_pixels: a batch holds at most this many pixels, unless one sample alone is larger (it then is a
            batch of its own).
        images: the number of images of each sample (default 1 each); samples without images join any batch.
        max_batch_images: optionally, at most this many images per batch too.

    Returns:
        The positions of the samples of each batch, in order.
    """
    images = [1] * len(pixels) if images is None else list(images)
    if len(images) != len(pixels):
        raise ValueError(f"{len(pixels)} pixel counts but {len(images)} image counts")
    batches: list[list[int]] = []
    batch_pixels = batch_images = 0
    for position, (count, num) in enumerate(zip(pixels, images)):
        if not batches or _starts_new_batch(batch_pixels, batch_images, count, num, max_batch_pixels,
                                            max_batch_images):  # fmt: skip
            batches.append([])
            batch_pixels = batch_images = 0
        batches[-1].append(position)
        batch_pixels += count
        batch_images += num
    return batches


@dataclass
class _Entry:
    """One sample as the reader hands it over: its images' patches, or why it is skipped."""

    index: int
    carried: dict
    num_images: int = 0
    num_patches: int = 0
    grids: list = field(default_factory=list)  # [h, w] per image
    source_bytes: int = 0
    error: str | None = None


def _source_bytes(item: Any) -> int:
    """Bytes of an image as stored in the source (its encoded bytes or its file); 0 for decoded images."""
    if isinstance(item, dict):
        if item.get("bytes") is not None:
            return len(item["bytes"])
        item = item.get("path")
    if isinstance(item, (bytes, bytearray, memoryview)):
        return len(item)
    if isinstance(item, (str, os.PathLike)) and os.path.isfile(item):
        return os.path.getsize(item)
    return 0


def _keep(item):
    """The DataLoader's collate function: hand the reader's task over as it is."""
    return item


class SampleReader:
    """
    Reads, decodes and pre-processes consecutive samples of a source dataset: one task of the pipeline's first stage
    (a `torch.utils.data.Dataset`: `reader[k]` does task `k`; the `DataLoader` workers run it).

    Args:
        source: the `datasets.Dataset` (images undecoded: bytes/path dicts, paths, ...).
        image_column, text_columns: the column of images (one or a list per sample) and the columns carried over.
        processor: the `ViQImageProcessor`.
        tasks: the source indices of each task.

    A task gives a dict: `entries` (one `_Entry` per sample, in order: its grids, or why it is skipped),
    `pixel_values` (float32, the patches of the task's readable samples, packed; `None` if there are none) and
    `seconds` (time spent reading + decoding, and pre-processing).
    """

    def __init__(self, source, image_column: str, text_columns: Sequence[str], processor,
                 tasks: Sequence[Sequence[int]]):  # fmt: skip
        self.source = source
        self.image_column = image_column
        self.text_columns = list(text_columns)
        self.processor = processor
        self.tasks = [list(task) for task in tasks]
        self.patch_dim = 3 * int(processor.patch_size) ** 2

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, task: int) -> dict:
        import torch

        started = time.perf_counter()
        indices = self.tasks[task]
        batch = self.source[indices]
        decoded = []
        for position, index in enumerate(indices):
            entry = _Entry(index, {name: batch[name][position] for name in self.text_columns})
            value = batch[self.image_column][position]
            values = [item for item in (value if isinstance(value, (list, tuple)) else [value]) if item is not None]
            try:
                images = [open_image(item) for item in values]
            except Exception as error:  # noqa: BLE001 - unreadable image: the sample is recorded as skipped
                entry.error = _short(error)
                images = []
            else:
                entry.num_images = len(images)
                entry.source_bytes = sum(_source_bytes(item) for item in values)
            decoded.append((entry, images))
        read_seconds = time.perf_counter() - started

        started = time.perf_counter()
        patches = []
        for entry, images in decoded:
            if not images:
                continue
            try:
                inputs = self.processor(images=images, return_tensors="pt")
            except Exception as error:  # noqa: BLE001 - an image the processor refuses: skipped too
                entry.error, entry.num_images = _short(error), 0
                continue
            patches.append(inputs["pixel_values"])
            entry.grids = inputs["image_grid_hw"].tolist()
            entry.num_patches = int(inputs["pixel_values"].shape[0])
        pixel_values = torch.cat(patches) if len(patches) > 1 else patches[0] if patches else None
        preprocess_seconds = time.perf_counter() - started
        return {
            "entries": [entry for entry, _ in decoded],
            "pixel_values": pixel_values,
            "seconds": (read_seconds, preprocess_seconds),
        }


def _tasks(reader: SampleReader, num_workers: int) -> Iterator[dict]:
    """The reader's tasks in order: in the calling thread (`num_workers=0`), or from a `DataLoader`'s workers."""
    if num_workers == 0 or len(reader) == 0:
        for task in range(len(reader)):
            yield reader[task]
        return
    from torch.utils.data import DataLoader

    loader = DataLoader(reader, batch_size=None, shuffle=False, num_workers=min(num_workers, len(reader)),
                        collate_fn=_keep, prefetch_factor=_PREFETCH_TASKS)  # fmt: skip
    iterator = iter(loader)
    try:
        yield from iterator
    finally:
        iterator._shutdown_workers()  # at once, also when the run stops early (an error, Ctrl-C)


class _Buffers:
    """
    Patch buffers handed back after their encode call and reused: a fresh buffer per batch would cost a page fault
    per 4 KiB. They are plain host memory: on CUDA `encode` stages its input in a pinned buffer of torch's caching
    host allocator itself (a pinned buffer of ours would only be copied once more).
    """

    def __init__(self, patch_dim: int, keep: int = 2):
        self.patch_dim, self.keep = patch_dim, keep
        self.free: list = []
        self.lock = threading.Lock()  # taken by the assembling thread, handed back by the encoding one

    def get(self, rows: int):
        import torch

        with self.lock:
            for position, buffer in enumerate(self.free):
                if buffer.shape[0] >= rows:
                    return self.free.pop(position)
        return torch.empty((max(rows, 1024), self.patch_dim))

    def put(self, buffer) -> None:
        if buffer is not None:
            with self.lock:
                self.free = sorted([*self.free, buffer], key=lambda item: -item.shape[0])[: self.keep]


class _Batch:
    """
    The samples of one encode call. Their patches are copied, as they arrive, into one buffer that grows as needed,
    so a task's shared memory is released at once and the call needs no concatenation.
    """

    def __init__(self, buffers: _Buffers):
        self.buffers = buffers
        self.entries: list[_Entry] = []
        self.grids: list[list[int]] = []
        self.pixel_values = None  # (capacity, patch_dim) float32
        self.used = self.pixels = self.images = 0

    def add(self, entry: _Entry, pixel_values, pixels: int) -> None:
        self.entries.append(entry)
        if not entry.num_images:
            return
        end = self.used + int(pixel_values.shape[0])
        capacity = 0 if self.pixel_values is None else int(self.pixel_values.shape[0])
        if end > capacity:
            grown = self.buffers.get(max(end, 2 * capacity))
            if self.used:
                grown[: self.used].copy_(self.pixel_values[: self.used])
            self.buffers.put(self.pixel_values)
            self.pixel_values = grown
        self.pixel_values[self.used : end].copy_(pixel_values)
        self.used = end
        self.grids.extend(entry.grids)
        self.pixels += pixels
        self.images += entry.num_images

    def release(self) -> None:
        """Hand the buffer back once the call that read it is finished."""
        self.buffers.put(self.pixel_values)
        self.pixel_values = None


@dataclass
class _ReaderTime:
    """Reading + decoding and pre-processing seconds of the tasks assembled so far (summed over the workers)."""

    read_decode: float = 0.0
    preprocess: float = 0.0


def _assemble(tasks: Iterator[dict], buffers: _Buffers, pixels_per_patch: int, max_batch_pixels: int,
              max_batch_images: int | None, reader_time: _ReaderTime) -> Iterator[tuple[str, Any]]:  # fmt: skip
    """
    The reader's tasks turned into `("skip", entry)` for each unreadable sample and `("batch", batch)` for each
    full encode call, in the samples' order (the last batch may be empty).
    """
    batch = _Batch(buffers)
    for task in tasks:
        reader_time.read_decode += task["seconds"][0]
        reader_time.preprocess += task["seconds"][1]
        start = 0
        for entry in task["entries"]:
            if entry.error is not None:
                yield "skip", entry
                continue
            pixels = entry.num_patches * pixels_per_patch
            if _starts_new_batch(batch.pixels, batch.images, pixels, entry.num_images, max_batch_pixels,
                                 max_batch_images):  # fmt: skip
                yield "batch", batch
                batch = _Batch(buffers)
            end = start + entry.num_patches
            batch.add(entry, task["pixel_values"][start:end] if entry.num_patches else None, pixels)
            start = end
        del task  # its shared memory: the patches are in the batch now
    yield "batch", batch


class _AheadThread:
    """
    Runs an iterator in a thread, `ahead` items in advance: with reader processes, receiving their tasks and copying
    the patches into the batch buffers happen while the encoder runs (torch releases the GIL in its kernels).
    Iterating gives the items in order; an error in the thread is raised here; `close()` stops the thread.
    """

    _END = object()

    def __init__(self, items: Iterator, ahead: int):
        self.items = items
        self.queue: queue.Queue = queue.Queue(maxsize=ahead)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="viq-extract-assembler", daemon=True)
        self.thread.start()

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self.items:
                if not self._put(("item", item)):
                    return
            self._put(("end", None))
        except BaseException as error:  # noqa: BLE001 - handed to the consuming thread, which raises it
            self._put(("error", error))

    def __iter__(self):
        while True:
            kind, value = self.queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


@dataclass
class _Launched:
    """An encode call on its way: the codes (on CUDA, being copied to pinned memory until `event`)."""

    batch: _Batch
    codes: Any = None
    event: Any = None


class _Encoder:
    """One call of `model.encode` per batch (on CUDA: host patches in, codes back through pinned memory, no syncs)."""

    def __init__(self, model):
        parameter = next(model.parameters())
        self.model = model
        self.device, self.dtype = parameter.device, parameter.dtype
        self.cuda = self.device.type == "cuda"
        self.per_patch = int(model.config.codes_per_patch)
        self.seconds = 0.0

    def launch(self, batch: _Batch) -> _Launched:
        import torch

        launched = _Launched(batch)
        if not batch.images:
            return launched
        started = time.perf_counter()
        grid = torch.tensor(batch.grids, dtype=torch.long)
        pixel_values = batch.pixel_values[: batch.used]
        if not self.cuda:
            launched.codes = self.model.encode(pixel_values, grid, return_pooler_output=False).image_codes
        else:
            with torch.cuda.device(self.device):  # this process's GPU (cuda:LOCAL_RANK), whatever the current one
                # host tensors: `encode` checks them on the host and copies them without a synchronisation
                codes = self.model.encode(pixel_values, grid, return_pooler_output=False).image_codes
                launched.codes = torch.empty(codes.shape, dtype=codes.dtype, pin_memory=True)
                launched.codes.copy_(codes, non_blocking=True)  # on the host once `event` has passed
                launched.event = torch.cuda.Event()
                launched.event.record(torch.cuda.current_stream(self.device))
        self.seconds += time.perf_counter() - started
        return launched

    def finish(self, launched: _Launched) -> list[tuple[_Entry, list]]:
        """`(entry, codes of each image as uint16 arrays)` for each sample of the call, in order."""
        batch = launched.batch
        if launched.codes is None:
            return [(entry, []) for entry in batch.entries]
        started = time.perf_counter()
        if launched.event is not None:
            launched.event.synchronize()
        batch.release()  # the call has read its patches
        counts = [self.per_patch * height * width for height, width in batch.grids]
        codes = [part.numpy().astype(np.uint16) for part in launched.codes.cpu().split(counts)]
        results, position = [], 0
        for entry in batch.entries:
            results.append((entry, codes[position : position + entry.num_images]))
            position += entry.num_images
        self.seconds += time.perf_counter() - started
        return results


def write_code_shard(path: str | os.PathLike, rows: Sequence[dict], features) -> int:
    """Write rows (dicts with the columns of `features`) as one Parquet shard, atomically; returns its bytes."""
    import datasets

    table = {column: [row[column] for row in rows] for column in features}
    with atomic_path(path) as temporary:  # a killed run leaves no half-written shard
        datasets.Dataset.from_dict(table, features=features).to_parquet(temporary)
    return os.path.getsize(path)


class _ShardWriter:
    """Writes shards in order: in a writer thread (`threaded`), or at once in the calling thread."""

    def __init__(self, output_dir: str, rank: int, first_shard: int, features, threaded: bool,
                 done: Callable[[str, int, int], None]):  # fmt: skip
        from concurrent.futures import ThreadPoolExecutor

        self.output_dir, self.rank, self.next_shard, self.features = output_dir, rank, first_shard, features
        self.done = done  # called in the calling thread with (path, rows, bytes) once a shard is on disk
        self.seconds = 0.0
        self.pending: collections.deque = collections.deque()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="viq-extract-writer") if threaded else None

    def _write(self, path: str, rows: list[dict]) -> int:
        started = time.perf_counter()
        size = write_code_shard(path, rows, self.features)
        self.seconds += time.perf_counter() - started
        return size

    def submit(self, rows: list[dict]) -> None:
        path = os.path.join(self.output_dir, f"codes-{self.rank:05d}-{self.next_shard:05d}.parquet")
        self.next_shard += 1
        if self.executor is None:
            self.done(path, len(rows), self._write(path, rows))
            return
        self.pending.append((path, len(rows), self.executor.submit(self._write, path, rows)))
        while self.pending and (self.pending[0][2].done() or len(self.pending) > _MAX_PENDING_SHARDS):
            self._complete_oldest()

    def _complete_oldest(self) -> None:
        path, num_rows, future = self.pending.popleft()
        self.done(path, num_rows, future.result())  # a failed write raises here, in the calling thread

    def close(self) -> None:
        """Wait for every shard to be written."""
        while self.pending:
            self._complete_oldest()
        if self.executor is not None:
            self.executor.shutdown()

    def abort(self) -> None:
        """Stop: shards not started are dropped (they are redone on resume); one being written is finished."""
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------------------------------------------------------
# Extraction
# ------------------------------------------------------------------------------------------------------------------
def dtype_name(dtype) -> str:
    """`torch.bfloat16` -> `"bfloat16"` (as recorded in `viq_codes.json`)."""
    return str(dtype).removeprefix("torch.")


def extract_codes(
    dataset: Any,
    output_dir: str | os.PathLike,
    model: Any,
    processor: Any = None,
    *,
    split: str | None = None,
    image_column: str | None = None,
    text_columns: list[str] | None = None,
    image_folder: str | os.PathLike | None = None,
    max_batch_pixels: int = DEFAULT_MAX_BATCH_PIXELS,
    batch_size: int | None = None,
    num_workers: int | None = None,
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
        dataset: a `datasets.Dataset`/`DatasetDict`, a `save_to_disk` folder, a LLaVA-style `.json`/`.jsonl` file
            (`image` + `conversations`; carried as `messages` for `ViQCodesCollator`), or a name/path for
            `load_dataset`.
        output_dir: folder for the shards, `viq_codes.json` and `skipped-*.jsonl`.
        model: a `ViQModel` (on its device, in its dtype), a `ViQPipeline`, or a folder/Hub id loaded with
            `ViQPipeline.from_pretrained(model, viq_size, device="cpu")`.
        processor: a `ViQImageProcessor` (default: the pipeline's, else the defaults).
        split: split to use when `dataset` has several.
        image_column: column of images (an Image or a list of Images; or paths/bytes). Default: the first Image column
            (`images` for LLaVA JSON).
        text_columns: columns copied to the output. Default: every column but the image column.
        image_folder: folder the image paths of a LLaVA JSON file are relative to.
        max_batch_pixels: processed pixels per packed `model.encode` call (a larger sample is encoded alone).
        batch_size: optionally, at most this many images per call as well.
        num_workers: reader processes (read, decode, pre-process) running while the model encodes; `0` runs every
            stage in turn in this thread. Default: [`default_num_workers`].
        shard_size: samples per shard.
        limit: use only the first `limit` rows of the dataset (before splitting across ranks).
        rank, world_size: this process's contiguous block of the (limited) dataset.
        overwrite: delete this rank's shards (rank 0: also the metadata) and start over.
        model_id, viq_size: recorded in `viq_codes.json` (default: the model's name/path and preset).
        dataset_name: recorded as the source (default: the name/path given, else the dataset's own name).
        progress: show a tqdm bar over samples. on_shard_written: called with each finished shard's path.

    Raises:
        `ValueError` for bad arguments, a folder made with another model, dtype or preprocessing (an
        [`IncompatibleCodebookError`] for another codebook), or a LLaVA sample whose `<image>` markers do not match its
        images; `FileNotFoundError` for a missing dataset.
    """
    from .pipeline import ViQPipeline

    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    if (batch_size is not None and batch_size < 1) or shard_size < 1 or max_batch_pixels < 1:
        raise ValueError("batch_size, shard_size and max_batch_pixels must be >= 1")
    if num_workers is not None and num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    check_extraction_dependencies()
    output_dir = os.fspath(output_dir)

    if isinstance(model, (str, os.PathLike)):
        model = ViQPipeline.from_pretrained(os.fspath(model), viq_size, device="cpu")
    if isinstance(model, ViQPipeline):
        model_id = model_id or model.model_id
        viq_size = viq_size or model.viq_size or model.config.preset
        processor = processor if processor is not None else model.image_processor
        model = model.model
    if processor is None:
        from .models.viq.image_processing_viq import ViQImageProcessor

        processor = ViQImageProcessor()
    config = model.config
    if num_workers is None:
        num_workers = default_num_workers(process_environment().local_world_size, next(model.parameters()).device)
    if config.codebook_size > 2**16:
        raise ValueError(f"a codebook of {config.codebook_size} codes does not fit uint16 codes")
    if model_id is None:
        model_id = getattr(config, "_name_or_path", None) or None
    if model_id and os.path.isdir(os.path.expanduser(model_id)):
        model_id = os.path.abspath(os.path.expanduser(model_id))

    llava = is_llava_json(dataset)
    if dataset_name is None and isinstance(dataset, (str, os.PathLike)):
        dataset_name = os.fspath(dataset)
        if os.path.exists(os.path.expanduser(dataset_name)):
            dataset_name = os.path.abspath(os.path.expanduser(dataset_name))
    source = load_source_dataset(dataset, split, image_folder=image_folder)
    if dataset_name is None:
        dataset_name = source.info.dataset_name or source.info.builder_name
    source_fingerprint = getattr(source, "_fingerprint", None)

    features = source.features
    if image_column is None:
        image_column = next((name for name, feature in features.items() if _image_kind(feature)), None)
        if image_column is None and llava and "images" in features:
            image_column = "images"
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
        "dtype": dtype_name(next(model.parameters()).dtype),
        "processor": json.loads(processor.to_json_string()),
        "source": {
            "dataset": dataset_name,
            "format": "llava-json" if llava else "datasets",
            "image_folder": os.path.abspath(os.path.expanduser(os.fspath(image_folder))) if image_folder else None,
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

    result = ExtractionResult(output_dir, rank, world_size, len(mine), 0, 0, already)
    if not todo:
        return result
    tasks = [todo[start : start + _SAMPLES_PER_TASK] for start in range(0, len(todo), _SAMPLES_PER_TASK)]
    reader = SampleReader(source, image_column, text_columns, processor, tasks)
    _run_pipeline(
        reader,
        model,
        _output_features(source.features, text_columns),
        result,
        next_shard=next_shard,
        max_batch_pixels=max_batch_pixels,
        max_batch_images=batch_size,
        num_workers=num_workers,
        shard_size=shard_size,
        progress=progress,
        on_shard_written=on_shard_written,
    )
    return result


def _run_pipeline(reader: SampleReader, model, features, result: ExtractionResult, *, next_shard: int,
                  max_batch_pixels: int, max_batch_images: int | None, num_workers: int, shard_size: int,
                  progress: bool, on_shard_written: Callable[[str], None] | None) -> None:  # fmt: skip
    """Read (workers) -> pack by pixels and encode (this thread) -> write (writer thread); fills `result`."""
    output_dir, rank = result.output_dir, result.rank
    skipped_path = _skipped_file(output_dir, rank)
    pixels_per_patch = int(reader.processor.patch_size) ** 2
    encoder = _Encoder(model)
    in_flight_limit = 1 if encoder.cuda and num_workers else 0  # on CUDA, fill the next batch meanwhile
    rows: list[dict] = []
    buffers = _Buffers(reader.patch_dim)
    in_flight: collections.deque[_Launched] = collections.deque()
    reader_time = _ReaderTime()
    started = time.perf_counter()

    def written(path: str, num_rows: int, size: int) -> None:
        result.shards.append(path)
        result.num_written += num_rows
        result.stored_bytes += size
        if on_shard_written is not None:
            on_shard_written(path)

    def skip(index: int, error: str) -> None:
        logger.warning(f"Skipping sample {index} (source index): {error}")
        with open(skipped_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"source_index": index, "rank": rank, "error": error}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        result.num_skipped += 1

    def finish_oldest() -> None:
        nonlocal rows
        samples = encoder.finish(in_flight.popleft())
        for entry, codes in samples:
            rows.append({"image_codes": codes, "image_grid_hw": entry.grids, "source_index": entry.index,
                         **entry.carried})  # fmt: skip
            result.num_images += entry.num_images
            result.source_bytes += entry.source_bytes
            if len(rows) >= shard_size:
                writer.submit(rows)
                rows = []
        bar.update(len(samples))

    def encode_batch(batch: _Batch | None) -> None:
        if batch is not None and batch.entries:
            in_flight.append(encoder.launch(batch))
        while len(in_flight) > in_flight_limit:
            finish_oldest()

    writer = _ShardWriter(output_dir, rank, next_shard, features, threaded=num_workers > 0, done=written)
    bar = progress_bar(total=result.num_samples, initial=result.num_already_done, unit="sample", disable=not progress,
                       desc=f"extract (rank {rank})" if result.world_size > 1 else "extract")  # fmt: skip
    tasks = _tasks(reader, num_workers)
    items = _assemble(tasks, buffers, pixels_per_patch, max_batch_pixels, max_batch_images, reader_time)
    ahead = _AheadThread(items, _READY_BATCHES) if num_workers else None  # the serial path stays in one thread
    try:
        for kind, value in ahead if ahead is not None else items:
            if kind == "skip":
                skip(value.index, value.error)
                bar.update(1)
            else:
                encode_batch(value)
        in_flight_limit = 0
        encode_batch(None)
        if rows:
            writer.submit(rows)
            rows = []
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        if ahead is not None:
            ahead.close()
        tasks.close()  # stops the reader processes at once, also when the run stops early
        bar.close()
        result.seconds = time.perf_counter() - started
        result.stage_seconds = {
            "read_decode": reader_time.read_decode,
            "preprocess": reader_time.preprocess,
            "encode": encoder.seconds,
            "write": writer.seconds,
        }


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


__all__ = [
    "DEFAULT_MAX_BATCH_PIXELS",
    "ExtractionResult",
    "ProcessEnvironment",
    "SampleReader",
    "default_num_workers",
    "dtype_name",
    "extract_codes",
    "is_llava_json",
    "load_code_dataset",
    "load_source_dataset",
    "pack_by_pixels",
    "process_device",
    "process_environment",
    "read_code_metadata",
    "write_code_shard",
]
