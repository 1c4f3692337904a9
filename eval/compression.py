"""ViQ codes against JPEG at the same number of bytes per image (the paper's Fig. 4 comparison), plus code storage.

For every image of a folder (default: the bundled `assets/samples`):

1. the image goes through the processor (native resolution, `--max-pixels` budget), ViQ encodes it to codes and
   decodes the codes back to pixels; PSNR and SSIM are measured against the image as fed to the model;
2. the ViQ payload is the paper's `uint16` code stream (2 bytes per code); JPEG's quality is searched (bisection over
   1..100) for the largest file that fits that many bytes, and the JPEG is decoded and measured the same way;
3. the code stream is also stored bit-packed at ceil(log2 K) bits per code and through zlib / bz2 / lzma, measured.

Writes to `--output-dir` (default `outputs/compression`): `report.md` (the tables, also printed), `results.csv`,
`results.json` and `grid.png` (rows = images; columns = original, ViQ reconstruction, JPEG at the matched size).

    python eval/compression.py                                   # XuminYu/ViQ_weights, 16k (downloads once)
    python eval/compression.py --model examples/tiny-viq         # smoke checkpoint: runs anywhere, numbers meaningless
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from transformers_viq import metrics
from transformers_viq.image_io import check_image_file
from transformers_viq.pipeline import DEFAULT_MODEL, DEFAULT_SIZE, ViQPipeline
from transformers_viq.visualization import font

from eval_utils import list_images, run_script


REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = REPO / "assets" / "samples"
STORAGE_KEYS = ("uint16", "packed", "zlib", "bz2", "lzma", "zlib_packed", "bz2_packed", "lzma_packed")


def measure(item, codebook_size: int) -> tuple[dict, np.ndarray]:
    """All numbers for one reconstruction; returns `(row, decoded JPEG)`."""
    original, reconstruction = item.original, item.reconstruction
    height, width = original.shape[:2]
    pixels = height * width
    storage = metrics.code_storage(item.codes, codebook_size)
    budget = storage["uint16"]
    match = metrics.jpeg_at_budget(original, budget)
    jpeg = match.decoded()
    row = {
        "image": item.name,
        "width": width,
        "height": height,
        "num_codes": int(item.codes.size),
        "viq_bytes": budget,
        "viq_bpp": metrics.bits_per_pixel(budget, pixels),
        "viq_psnr": metrics.psnr(original, reconstruction),
        "viq_ssim": metrics.ssim(original, reconstruction),
        "jpeg_quality": match.quality,
        "jpeg_fits_budget": match.fits,
        "jpeg_bytes": match.num_bytes,
        "jpeg_bpp": metrics.bits_per_pixel(match.num_bytes, pixels),
        "jpeg_psnr": metrics.psnr(original, jpeg),
        "jpeg_ssim": metrics.ssim(original, jpeg),
        "png_bytes": metrics.png_bytes(original),
        "raw_rgb_bytes": 3 * pixels,
    }
    for key in STORAGE_KEYS:
        row[f"codes_{key}_bytes"] = storage[key]
        row[f"codes_{key}_bpp"] = metrics.bits_per_pixel(storage[key], pixels)
    return row, jpeg


def _mean(rows: list[dict], key: str) -> float:
    values = [row[key] for row in rows]
    return float(np.mean(values)) if values else math.nan


def _db(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.2f}"


def markdown_report(rows: list[dict], meta: dict) -> str:
    bits = meta["bits_per_code"]
    lines = [
        f"# ViQ vs JPEG at the same bytes: {len(rows)} images",
        "",
        f"Model `{meta['model']}`"
        + (f" (size {meta['viq_size']})" if meta.get("viq_size") else "")
        + f", codebook {meta['codebook_size']:,} codes ({bits} bits/code), {meta['codes_per_patch']} codes per "
        f"16x16 patch. Images at their fed size (max_pixels={meta['max_pixels']:,}); PSNR/SSIM against the image as "
        "fed. JPEG: Pillow/libjpeg, 4:2:0, optimised Huffman tables, the highest quality whose file fits the ViQ "
        "uint16 bytes of the same image.",
        "",
        (
            "| image | size (HxW) | ViQ bytes (uint16) | ViQ bpp | ViQ PSNR | ViQ SSIM | JPEG q | JPEG bytes "
            "| JPEG bpp | JPEG PSNR | JPEG SSIM |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        quality = f"{row['jpeg_quality']}" + ("" if row["jpeg_fits_budget"] else "*")
        lines.append(
            f"| {row['image']} | {row['height']}x{row['width']} | {row['viq_bytes']:,} | {row['viq_bpp']:.4f} | "
            f"{_db(row['viq_psnr'])} | {row['viq_ssim']:.4f} | {quality} | {row['jpeg_bytes']:,} | "
            f"{row['jpeg_bpp']:.4f} | {_db(row['jpeg_psnr'])} | {row['jpeg_ssim']:.4f} |"
        )
    lines.append(
        f"| **mean** | | {_mean(rows, 'viq_bytes'):,.0f} | {_mean(rows, 'viq_bpp'):.4f} | "
        f"{_db(_mean(rows, 'viq_psnr'))} | {_mean(rows, 'viq_ssim'):.4f} | | {_mean(rows, 'jpeg_bytes'):,.0f} | "
        f"{_mean(rows, 'jpeg_bpp'):.4f} | {_db(_mean(rows, 'jpeg_psnr'))} | {_mean(rows, 'jpeg_ssim'):.4f} |"
    )
    if any(not row["jpeg_fits_budget"] for row in rows):
        lines += ["", "\\* even JPEG quality 1 is larger than the ViQ budget for this image; its real size is shown."]

    headers = [
        "uint16",
        f"bit-packed ({bits} b)",
        "zlib",
        "bz2",
        "lzma",
        "zlib (packed)",
        "bz2 (packed)",
        "lzma (packed)",
    ]
    lines += [
        "",
        "## Storing the codes: bytes (bits per pixel)",
        "",
        (
            "zlib level 9, bz2 level 9 and lzma (xz) preset 9e, run on the uint16 stream and on the bit-packed "
            "stream; whole compressed files, headers included, each checked to decompress to its input."
        ),
        "",
        "| image | codes | " + " | ".join(headers) + " |",
        "|---|---:|" + "---:|" * len(headers),
    ]
    for row in rows:
        cells = [f"{row[f'codes_{key}_bytes']:,} ({row[f'codes_{key}_bpp']:.4f})" for key in STORAGE_KEYS]
        lines.append(f"| {row['image']} | {row['num_codes']:,} | " + " | ".join(cells) + " |")
    cells = [
        f"{_mean(rows, f'codes_{key}_bytes'):,.0f} ({_mean(rows, f'codes_{key}_bpp'):.4f})" for key in STORAGE_KEYS
    ]
    lines.append(f"| **mean** | {_mean(rows, 'num_codes'):,.0f} | " + " | ".join(cells) + " |")
    best = {key: _mean(rows, f"codes_{key}_bytes") for key in STORAGE_KEYS}
    winner = min(best, key=best.get)
    lines += [
        "",
        (
            f"Smallest on average: **{winner}**, {best[winner] / best['uint16']:.3f} of uint16 "
            f"(bit-packing alone: {best['packed'] / best['uint16']:.3f})."
        ),
    ]
    if meta.get("smoke"):
        lines += [
            "",
            (
                "NOTE: this ran the tiny smoke checkpoint (random weights): its reconstructions and codes carry "
                "no meaning, only the pipeline is exercised. Run with the real model for meaningful numbers."
            ),
        ]
    return "\n".join(lines) + "\n"


def picture_grid(
    examples: list[tuple[dict, np.ndarray, np.ndarray, np.ndarray]], row_height: int = 256, note: str | None = None
) -> Image.Image:
    """Rows = images; columns = original, ViQ reconstruction, JPEG at the matched size; captions under each cell."""
    text_font = font(14)
    title_font = font(16)
    margin, gap, caption_lines, line_height = 12, 10, 2, 19
    scaled = []
    for row, original, viq, jpeg in examples:
        height, width = original.shape[:2]
        new_width = max(1, round(width * row_height / height))
        cells = [
            Image.fromarray(a).resize(
                (new_width, row_height), Image.Resampling.NEAREST if height < row_height else Image.Resampling.LANCZOS
            )
            for a in (original, viq, jpeg)
        ]
        scaled.append((row, cells))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def captions(row):
        quality = f"q={row['jpeg_quality']}" + ("" if row["jpeg_fits_budget"] else " (over budget)")
        return [
            [f"original {row['height']}x{row['width']} (HxW)", f"{row['image']}"],
            [
                f"ViQ {row['viq_bytes']:,} B, {row['viq_bpp']:.3f} bpp",
                f"PSNR {_db(row['viq_psnr'])} dB, SSIM {row['viq_ssim']:.3f}",
            ],
            [
                f"JPEG {quality}, {row['jpeg_bytes']:,} B, {row['jpeg_bpp']:.3f} bpp",
                f"PSNR {_db(row['jpeg_psnr'])} dB, SSIM {row['jpeg_ssim']:.3f}",
            ],
        ]

    def text_width(text, used_font=text_font):
        left, _, right, _ = probe.textbbox((0, 0), text, font=used_font)
        return right - left

    column_widths = [0, 0, 0]
    for row, cells in scaled:
        for column, (cell, caption) in enumerate(zip(cells, captions(row))):
            column_widths[column] = max(column_widths[column], cell.width, *(text_width(t) for t in caption))
    headers = ["original", "ViQ reconstruction", "JPEG at the same bytes"]
    header_height = 28 + (24 if note else 0)
    cell_height = row_height + caption_lines * line_height + 6
    width = sum(column_widths) + gap * 2 + 2 * margin
    height = 2 * margin + header_height + len(scaled) * (cell_height + gap)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    x = margin
    if note:
        draw.text((x, margin), note, fill=(170, 0, 0), font=title_font)
    for column, header in enumerate(headers):
        draw.text((x, margin + header_height - 28), header, fill="black", font=title_font)
        x += column_widths[column] + gap
    y = margin + header_height
    for row, cells in scaled:
        x = margin
        for column, (cell, caption) in enumerate(zip(cells, captions(row))):
            canvas.paste(cell, (x, y))
            for index, text in enumerate(caption):
                draw.text((x, y + row_height + 4 + index * line_height), text, fill="black", font=text_font)
            x += column_widths[column] + gap
        y += cell_height + gap
    return canvas


def run(args) -> dict:
    files = list_images(Path(args.images))
    if args.limit:
        files = files[: args.limit]
    for file in files:
        check_image_file(file)
    pipe = ViQPipeline.from_pretrained(args.model, args.size, device=args.device, dtype=args.dtype,
                                       max_pixels=args.max_pixels)  # fmt: skip
    model_id, size, codebook_size = pipe.model_id, pipe.viq_size, pipe.codebook_size
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)

    rows, examples = [], []
    for item in pipe.reconstruct(files, args.batch_size, progress=not args.quiet, desc="compression",
                                 keep_model_size=True):  # fmt: skip
        row, jpeg = measure(item, codebook_size)
        rows.append(row)
        examples.append((row, item.original, item.reconstruction, jpeg))

    smoke = (
        (REPO / "examples" / "tiny-viq").resolve() == Path(model_id).resolve() if Path(model_id).exists() else False
    )
    meta = {
        "model": model_id,
        "viq_size": size,
        "codebook_size": codebook_size,
        "bits_per_code": metrics.bits_per_code(codebook_size),
        "codes_per_patch": pipe.config.codes_per_patch,
        "max_pixels": pipe.image_processor.max_pixels,
        "device": str(pipe.device),
        "dtype": args.dtype,
        "jpeg": "Pillow/libjpeg, baseline, 4:2:0, optimize=True; highest quality with bytes <= ViQ uint16 bytes",
        "compressors": "zlib 9, bz2 9, lzma preset 9e (xz), on the uint16 and the bit-packed stream",
        "smoke": smoke,
    }
    report = markdown_report(rows, meta)
    (output / "report.md").write_text(report)
    with open(output / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    means = {
        key: _mean(rows, key)
        for key in rows[0]
        if isinstance(rows[0][key], (int, float)) and not isinstance(rows[0][key], bool)
    }
    (output / "results.json").write_text(json.dumps({"meta": meta, "images": rows, "mean": means}, indent=2) + "\n")
    note = "tiny smoke checkpoint (random weights): reconstructions are meaningless" if smoke else None
    picture_grid(examples, note=note).save(output / "grid.png")
    if not args.quiet:
        print(report)
        print(f"wrote {output}/report.md, results.csv, results.json, grid.png")
    return {"rows": rows, "mean": means, "meta": meta, "output_dir": str(output)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", default=str(DEFAULT_IMAGES), help="folder of images (default: assets/samples)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images")
    parser.add_argument(
        "--model", default=None, help=f"HF-format folder/repo or the authors' repo (default {DEFAULT_MODEL})"
    )
    parser.add_argument(
        "--size",
        default=None,
        choices=("2k", "4k", "8k", "16k", "64k"),
        help=f"authors' layout size (default {DEFAULT_SIZE} for {DEFAULT_MODEL})",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--max-pixels", type=int, default=512 * 512, help="pixel budget per image (default 512*512)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per packed model call")
    parser.add_argument("--output-dir", default="outputs/compression")
    parser.add_argument("--quiet", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_script("compression.py", build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
