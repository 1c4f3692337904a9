"""Reconstruction quality of ViQ: PSNR, SSIM and rFID at 256x256 (the protocol of the paper's Table 3).

Every image is resized so that its shorter side is `--resolution` (256; bicubic, the longer side
`int(256 * long / short)`), center-cropped to 256x256, encoded to codes and decoded back to pixels; PSNR and SSIM
(`transformers_viq.metrics`, scikit-image) are averaged over images, and rFID is the Frechet distance between
Inception-v3 pool3 features of the originals and of the reconstructions.

Images come from a folder (`--images DIR`, searched recursively) or a `datasets` image dataset
(`--dataset NAME --split validation --image-column image`; e.g. ImageNet-1k val as in the paper; a folder written by
`save_to_disk` works too). `--limit N` takes the first N images. Unreadable images are skipped and counted.

rFID needs Inception weights, and this script downloads nothing: pass `--inception-weights PATH` to a TorchScript
Inception-v3 feature extractor that takes `uint8` images `(N, 3, H, W)` and returns `(N, 2048)` pool3 features when
called as `model(images, return_features=True)` - the `inception-2015-12-05.pt` file used for FID by StyleGAN2-ADA
and clean-fid has this interface. Without usable weights the script says that rFID was skipped, and why, and still
reports PSNR and SSIM. FID from few images is biased upwards; the paper uses the 50,000 ImageNet val images.

    python eval/reconstruction.py --images path/to/folder --limit 1000
    python eval/reconstruction.py --dataset ILSVRC/imagenet-1k --split validation --inception-weights inc.pt

Writes `results.json` and `per_image.csv` to `--output-dir` (default `outputs/reconstruction`).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

from transformers_viq import metrics
from transformers_viq.image_io import load_rgb, resize_crop
from transformers_viq.pipeline import DEFAULT_MODEL, DEFAULT_SIZE, ViQPipeline, reconstruction_numbers
from transformers_viq.visualization import numbers_text, save_png, side_by_side

from eval_utils import list_images, run_script


class Source:
    """The images to evaluate, as a lazy stream of `(name, PIL image or path)`, with a count when known."""

    def __init__(self, args):
        self.skipped: list[str] = []
        self.limit = args.limit
        if bool(args.images) == bool(args.dataset):
            raise ValueError("give exactly one of --images DIR or --dataset NAME")
        if args.images:
            folder = Path(args.images)
            files = list_images(folder, recursive=True)
            self.files = files[: self.limit] if self.limit else files
            self.dataset = None
            self.total = len(self.files)
            self.description = f"folder {folder}"
        else:
            self.files = None
            self.dataset = self._load_dataset(args.dataset, args.split, args.streaming)
            self.column = args.image_column
            names = getattr(self.dataset, "column_names", None)
            if names is not None and self.column not in names:
                raise ValueError(f"dataset {args.dataset} has no column {self.column!r} (columns: {names})")
            total = len(self.dataset) if hasattr(self.dataset, "__len__") else None
            self.total = min(total, self.limit) if total is not None and self.limit else (total or self.limit)
            self.description = f"dataset {args.dataset} [{args.split}]"

    @staticmethod
    def _load_dataset(name: str, split: str, streaming: bool):
        try:
            import datasets
        except ImportError as error:
            raise RuntimeError("--dataset needs the datasets library: pip install datasets") from error
        try:
            if os.path.isdir(name) and any(
                os.path.isfile(os.path.join(name, f)) for f in ("state.json", "dataset_dict.json")
            ):
                loaded = datasets.load_from_disk(name)
                return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
            return datasets.load_dataset(name, split=split, streaming=streaming)
        except Exception as error:
            first = " ".join(str(error).split("\n")[0].split())
            raise RuntimeError(f"cannot load dataset {name} [{split}]: {first}") from error

    def _decode(self, name: str, value) -> np.ndarray | None:
        try:
            return load_rgb(value)
        except ValueError as error:
            self.skipped.append(name)
            print(f"skipped {name}: {' '.join(str(error).split())}", file=sys.stderr)
            return None

    def __iter__(self):
        if self.files is not None:
            for path in self.files:
                array = self._decode(str(path), path)
                if array is not None:
                    yield str(path), array
            return
        for index, example in enumerate(self.dataset):
            if self.limit and index >= self.limit:
                break
            name = str(example.get("__key__") or example.get("filename") or f"{index}")
            array = self._decode(name, example[self.column])
            if array is not None:
                yield name, array


def load_inception(path: str | None, device: str):
    """`(model, None)`, or `(None, reason)` when no usable Inception weights are available."""
    if not path:
        return None, (
            "no Inception weights given (pass --inception-weights PATH to a TorchScript Inception-v3 feature "
            "extractor such as inception-2015-12-05.pt; this script downloads nothing)"
        )
    if not os.path.isfile(path):
        return None, f"Inception weights {path} do not exist"
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            model = torch.jit.load(path, map_location=device)
        return model.eval(), None
    except Exception as error:
        first = " ".join(str(error).split("\n")[0].split()).split(". ")[0].rstrip(".")
        return None, f"cannot load {path} as a TorchScript Inception-v3 ({first})"


def inception_features(model, images: list[np.ndarray], device) -> np.ndarray:
    """Pool3 features `(N, dim)` of `uint8` `(H, W, 3)` images."""
    import torch

    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous().to(device)
    with torch.no_grad():
        try:
            features = model(batch, return_features=True)
        except RuntimeError as error:
            if "return_features" not in str(error):
                raise
            features = model(batch)
    return features.float().reshape(batch.shape[0], -1).cpu().numpy()


def run(args) -> dict:
    source = Source(args)
    resolution = args.resolution
    pipe = ViQPipeline.from_pretrained(args.model, args.size, device=args.device, dtype=args.dtype,
                                       max_pixels=resolution * resolution, do_resize=False)  # fmt: skip
    model_id, size, device = pipe.model_id, pipe.viq_size, pipe.device
    inception, fid_reason = load_inception(args.inception_weights, str(device))
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)

    real_stats, fake_stats = metrics.FeatureStatistics(), metrics.FeatureStatistics()
    pending_real, pending_fake = [], []
    rows = []

    def flush():
        if inception is not None and pending_real:
            real_stats.update(inception_features(inception, pending_real, device))
            fake_stats.update(inception_features(inception, pending_fake, device))
        pending_real.clear()
        pending_fake.clear()

    items = ((name, resize_crop(array, resolution)) for name, array in source)
    for item in pipe.reconstruct(items, args.batch_size, not args.quiet, "reconstruction", source.total):
        psnr = metrics.psnr(item.original, item.reconstruction)
        rows.append({"image": item.name, "psnr": psnr, "ssim": metrics.ssim(item.original, item.reconstruction)})
        if len(rows) <= args.save_examples:
            numbers = reconstruction_numbers(item, pipe.codebook_size)
            picture = side_by_side(item.original, item.reconstruction, numbers_text(numbers, model_id))
            save_png(picture, output / f"example_{len(rows):03d}.png")
        if inception is not None:
            pending_real.append(item.original)
            pending_fake.append(item.reconstruction)
            if len(pending_real) >= args.fid_batch_size:
                flush()
    flush()
    if not rows:
        raise ValueError(f"no readable images in {source.description}")

    psnrs = np.array([row["psnr"] for row in rows])
    result = {
        "model": model_id,
        "viq_size": size,
        "codebook_size": pipe.codebook_size,
        "source": source.description,
        "resolution": resolution,
        "protocol": f"shorter side to {resolution} (bicubic), center crop {resolution}x{resolution}",
        "num_images": len(rows),
        "num_skipped": len(source.skipped),
        "psnr": float(psnrs.mean()),
        "psnr_finite_images": int(np.isfinite(psnrs).sum()),
        "ssim": float(np.mean([row["ssim"] for row in rows])),
        "rfid": None,
        "rfid_skipped": None,
        "device": str(device),
        "dtype": args.dtype,
    }
    if inception is None:
        result["rfid_skipped"] = fid_reason
    elif real_stats.count < 2:
        result["rfid_skipped"] = f"FID needs at least 2 images, got {real_stats.count}"
    else:
        result["rfid"] = metrics.frechet_distance(
            real_stats.mean, real_stats.covariance, fake_stats.mean, fake_stats.covariance
        )
        result["rfid_num_images"] = real_stats.count
        result["rfid_feature_dim"] = int(real_stats.mean.shape[0])
    (output / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    with open(output / "per_image.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "psnr", "ssim"])
        writer.writeheader()
        writer.writerows(rows)

    label = model_id + (f" ({size})" if size else "")
    print(f"ViQ reconstruction: {len(rows)} images from {source.description}, {result['protocol']}; model {label}")
    if source.skipped:
        print(f"skipped {len(source.skipped)} unreadable image(s)")
    psnr_text = "inf" if math.isinf(result["psnr"]) else f"{result['psnr']:.2f} dB"
    print(f"PSNR  {psnr_text}")
    print(f"SSIM  {result['ssim']:.4f}")
    if result["rfid"] is None:
        print(f"rFID skipped: {result['rfid_skipped']}.")
    else:
        note = " (few images: biased upwards; the paper uses 50,000)" if real_stats.count < 10000 else ""
        print(f"rFID  {result['rfid']:.3f} over {real_stats.count} images{note}")
    print(f"wrote {output}/results.json and per_image.csv")
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data = parser.add_argument_group("images (one of)")
    data.add_argument("--images", default=None, metavar="DIR", help="folder of images (searched recursively)")
    data.add_argument("--dataset", default=None, metavar="NAME", help="a datasets name or a save_to_disk folder")
    data.add_argument("--split", default="validation")
    data.add_argument("--image-column", default="image")
    data.add_argument("--streaming", action="store_true", help="stream the dataset instead of downloading it whole")
    data.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--resolution", type=int, default=256, help="side of the center crop (default 256)")
    parser.add_argument("--model", default=None, help=f"HF-format folder/repo or the authors' repo ({DEFAULT_MODEL})")
    parser.add_argument("--size", default=None, choices=("2k", "4k", "8k", "16k", "64k"),
                        help=f"authors' layout size (default {DEFAULT_SIZE} for {DEFAULT_MODEL})")  # fmt: skip
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--batch-size", type=int, default=8, help="images per packed model call")
    parser.add_argument("--inception-weights", default=None, metavar="PATH", help="TorchScript Inception-v3 for rFID")
    parser.add_argument("--fid-batch-size", type=int, default=64)
    parser.add_argument("--save-examples", type=int, default=0, metavar="N", help="save the first N side-by-sides")
    parser.add_argument("--output-dir", default="outputs/reconstruction")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_script("reconstruction.py", build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
