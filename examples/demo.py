"""Encode images to ViQ codes, decode them back, and write the codes plus a short report.

By default this runs the *miniature tokenizer* committed under `examples/miniature-viq/` (width 64, 2.9 MB, trained
on this project's synthetic shape scenes by `make miniature`) on the bundled sample photographs and scenes, so it
needs no network and finishes in seconds. Its codes carry the scenes it was trained on (colours, shapes, where they
are: see the reconstruction PSNR of `assets/scenes/`); photographs are far from its training data. For the real
tokenizer (1.1B-parameter SigLIP2-giant trunk, downloads ~7 GB once):

    python examples/demo.py --model XuminYu/ViQ_weights --size 16k

Errors are one line on stderr with the exit codes of the `viq` command (4: the Hub cannot be reached); `--debug`
(or `VIQ_DEBUG=1`) adds the traceback.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from transformers_viq import ViQCodes, ViQImageProcessor, ViQModel
from transformers_viq.exit_codes import run_main
from transformers_viq.metrics import psnr


REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "examples" / "tiny-viq"
MINIATURE = REPO / "examples" / "miniature-viq"
MINIATURE_NOTICE = (
    "NOTE: this ran the miniature tokenizer in examples/miniature-viq (width 64, trained by `make miniature` on\n"
    "synthetic 96x96 scenes of coloured shapes). It reconstructs such scenes; photographs are far from what it has\n"
    "seen. For the real ViQ tokenizer run:\n"
    "    python examples/demo.py --model XuminYu/ViQ_weights --size 16k"
)
SMOKE_NOTICE = (
    "NOTE: this ran the tiny smoke checkpoint in examples/tiny-viq (random weights, width 32). Its codes carry no\n"
    "meaning; it only proves the pipeline runs. For the real ViQ tokenizer run:\n"
    "    python examples/demo.py --model XuminYu/ViQ_weights --size 16k\n"
    "or in Python: ViQModel.from_pretrained('XuminYu/ViQ_weights', viq_size='16k')"
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="*", help="image files (default: assets/samples/*)")
    parser.add_argument("--model", default=str(MINIATURE),
                        help="HF-format folder/repo, or the authors' repo with --size")
    parser.add_argument("--size", default=None, help="2k/4k/8k/16k/64k: read the authors' published layout")
    parser.add_argument("--output-dir", default="outputs/demo")
    parser.add_argument("--max-pixels", type=int, default=512 * 512)
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error (or VIQ_DEBUG=1)")
    args = parser.parse_args(argv)

    images = args.images or sorted(str(p) for folder in ("samples", "scenes")
                                   for p in (REPO / "assets" / folder).glob("*.png"))  # fmt: skip
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)

    model = ViQModel.from_pretrained(args.model, viq_size=args.size).eval()
    processor = ViQImageProcessor(max_pixels=args.max_pixels)
    inputs = processor(images=images, return_tensors="pt")
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.encode(**inputs)
    seconds = time.perf_counter() - start
    decoded = None
    if getattr(model, "vae", None) is not None:
        with torch.inference_mode():
            decoded = processor.postprocess(model.decode(out.image_codes, out.image_grid_hw), return_tensors="np")

    grid = out.image_grid_hw
    records = [{"name": Path(p).name, "height": int(h) * 16, "width": int(w) * 16} for p, (h, w) in zip(images, grid)]
    codes = ViQCodes(out.image_codes, grid, model.config.fsq_levels, model=args.model, viq_size=model.config.preset,
                     images=records)  # fmt: skip
    codes.save(output / "codes.safetensors")

    bits = math.ceil(math.log2(model.config.codebook_size))
    lines = [
        f"# ViQ demo: {len(images)} images, model {args.model}" + (f" ({args.size})" if args.size else ""),
        "",
        f"codebook {model.config.codebook_size} codes (levels {model.config.fsq_levels}), {bits} bits per code; "
        f"encoded in {seconds:.2f} s on {next(model.parameters()).device}",
        "",
        "| image | size fed (HxW) | grid (HxW) | codes | distinct | uint16 bytes | raw RGB bytes | ratio "
        "| bits/pixel | PSNR (dB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    fed = processor.postprocess(inputs_as_images(inputs, processor), return_tensors="np") if decoded else None
    for index, (record, (h, w), image_codes) in enumerate(zip(records, grid.tolist(), codes.split())):
        pixels = record["height"] * record["width"]
        code_bytes = 2 * image_codes.numel()
        quality = f"{psnr(fed[index], decoded[index]):.2f}" if decoded else "-"
        lines.append(
            f"| {record['name']} | {record['height']}x{record['width']} | {h}x{w} | {image_codes.numel()} | "
            f"{image_codes.unique().numel()} | {code_bytes} | {3 * pixels} | 1/{3 * pixels / code_bytes:.0f} | "
            f"{image_codes.numel() * bits / pixels:.4f} | {quality} |"
        )
    lines += ["", f"codes: {output / 'codes.safetensors'} (load with `transformers_viq.ViQCodes.load`)"]
    if decoded:
        lines += ["", "PSNR: the decoded codes against the image as fed to the model (sides multiples of 16)"]
    if Path(args.model).resolve() == TINY.resolve():
        lines += ["", SMOKE_NOTICE]
    elif Path(args.model).resolve() == MINIATURE.resolve():
        lines += ["", MINIATURE_NOTICE]
    report = "\n".join(lines)
    (output / "report.md").write_text(report + "\n")
    print(report)


def inputs_as_images(inputs, processor) -> list[torch.Tensor]:
    """The packed, normalised patches the model saw, back as one `(3, 16h, 16w)` image in [-1, 1] per image."""
    images, offset = [], 0
    patch = processor.patch_size
    for h, w in inputs["image_grid_hw"].tolist():
        patches = inputs["pixel_values"][offset : offset + h * w].reshape(h, w, 3, patch, patch)
        images.append(patches.permute(2, 0, 3, 1, 4).reshape(3, h * patch, w * patch))
        offset += h * w
    return images


if __name__ == "__main__":
    # an error (no network, a missing model or image) is one line on stderr with the `viq` command's exit codes
    sys.exit(run_main("demo.py", main))
