# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Convert the authors' published ViQ checkpoints to the Hugging Face format, with a proof, and optionally push.

The authors' layout (`XuminYu/ViQ_weights`, no `config.json`) is read by `ViQModel.from_pretrained(repo,
viq_size=...)` through `transformers_viq.original_checkpoint` (file names, key table, safe reading). This script
writes the standard folder (`config.json` + `model.safetensors` + `preprocessor_config.json`), reloads it with
`AutoModel.from_pretrained` and proves that it gives the same codes as the source on a few images, then pushes it to
the Hub if asked. Nothing in the library imports this script; `viq convert` is the same command with the same
options.

    python -m transformers_viq.convert_viq_original_to_hf --size 16k --output-dir viq-16k-hf \
        [--source XuminYu/ViQ_weights] [--config config.json] [--check-image cat.jpg] [--push-to-hub me/viq-16k]
        [--revision REV] [--overwrite]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .hub_utils import check_local_folder
from .logging_utils import configure, get_logger
from .models.viq.configuration_viq import FSQ_LEVEL_PRESETS, ViQConfig
from .original_checkpoint import AUTHORS_REPO


logger = get_logger(__name__)


def default_check_images() -> list:
    """The sample photographs bundled with the repository, if present; else synthetic images."""
    import numpy as np

    root = Path(__file__).resolve().parents[2] / "assets" / "samples"
    files = sorted(p for p in root.glob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"}) if root.is_dir() else []
    if files:
        return [str(p) for p in files[:3]]
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, size=shape, dtype=np.uint8) for shape in ((96, 128, 3), (80, 48, 3))]


def convert_viq_checkpoint(
    source: str,
    size: str,
    output_dir: str | os.PathLike,
    *,
    check_images: list | None = None,
    push_to_hub: str | None = None,
    max_pixels: int = 256 * 256,
    config: ViQConfig | None = None,
    **hub_kwargs,
) -> dict:
    """
    Convert the authors' layout to HF format and prove the two give the same codes.

    Args:
        source (`str`): Hub id or local folder in the authors' layout (e.g. `"XuminYu/ViQ_weights"`).
        size (`str`): one of `2k, 4k, 8k, 16k, 64k`.
        output_dir (`str` or `os.PathLike`): where `config.json`, `model.safetensors` and `preprocessor_config.json`
            are written.
        check_images (`list`, *optional*): images (paths, PIL images or arrays) to compare codes on; defaults to the
            repository's sample photographs.
        push_to_hub (`str`, *optional*): a repo id to push the converted model and processor to.
        max_pixels (`int`, *optional*, defaults to 65536): pixel budget of the check images (keeps the check fast).
        config (`ViQConfig`, *optional*): the architecture, if not the released one of `size` (e.g. a shallow copy).
        hub_kwargs: `revision`, `cache_dir`, `local_files_only`, `token`, `subfolder`.

    Returns:
        `dict` with `codes_checked`, `codes_identical` (the check raises if they differ) and `output_dir`.
    """
    from transformers import AutoImageProcessor, AutoModel

    from .model_cards import push_to_hub_with_card
    from .models.viq.image_processing_viq import ViQImageProcessor
    from .models.viq.modeling_viq import ViQModel

    # A small pixel budget keeps the check fast; the processor saved with the model keeps the default budget.
    check_processor = ViQImageProcessor(max_pixels=max_pixels)
    inputs = check_processor(images=check_images or default_check_images(), return_tensors="pt")

    logger.info(f"Loading {source} ({size}) from the authors' layout")
    source_model = ViQModel.from_pretrained(source, viq_size=size, config=config, **hub_kwargs).eval()
    source_codes = source_model.encode(**inputs, return_pooler_output=False).image_codes
    logger.info(f"Writing {output_dir}")
    source_model.save_pretrained(output_dir)
    ViQImageProcessor().save_pretrained(output_dir)
    del source_model

    converted = AutoModel.from_pretrained(output_dir).eval()
    converted_processor = AutoImageProcessor.from_pretrained(output_dir)
    if converted_processor.to_dict() != ViQImageProcessor().to_dict():
        raise RuntimeError("The saved image processor does not reload with its settings.")
    converted_codes = converted.encode(**inputs, return_pooler_output=False).image_codes
    identical = int((converted_codes == source_codes).sum())
    if identical != source_codes.numel():
        raise RuntimeError(
            f"Conversion check failed: {source_codes.numel() - identical} of {source_codes.numel()} codes differ."
        )
    logger.info(f"The converted model gives identical codes on {source_codes.numel()} codes")
    if push_to_hub:
        logger.info(f"Pushing to {push_to_hub}")
        push_to_hub_with_card([converted, converted_processor], push_to_hub)
    return {"codes_checked": source_codes.numel(), "codes_identical": identical, "output_dir": str(output_dir)}


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The converter's options, shared by this script and `viq convert`."""
    parser.add_argument("--size", choices=list(FSQ_LEVEL_PRESETS), required=True, help="which published codebook size")
    parser.add_argument("--source", default=AUTHORS_REPO, help=f"Hub repo or local folder (default {AUTHORS_REPO})")
    parser.add_argument("-o", "--output-dir", "--output", dest="output_dir", required=True, metavar="DIR",
                        help="output folder")  # fmt: skip
    parser.add_argument("--push-to-hub", default=None, metavar="REPO", help="also push the result to this Hub repo")
    parser.add_argument("--check-image", action="append", default=None, metavar="IMAGE",
                        help="image to compare codes on (repeatable; default: the bundled samples)")  # fmt: skip
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="architecture config.json (default: the released architecture of --size)")  # fmt: skip
    parser.add_argument("--revision", default=None, help="Hub revision of --source")
    parser.add_argument("--overwrite", action="store_true", help="replace a converted model already in -o")
    return parser


OUTPUT_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")


def check_output_dir(args: argparse.Namespace) -> None:
    """
    `-o` must not be a file or the source folder, and must not hold a converted model unless `--overwrite`.

    Raises:
        `ValueError` for a file or the source folder; `FileExistsError` for files that `--overwrite` would replace.
    """
    output = Path(args.output_dir).expanduser()
    if output.exists() and not output.is_dir():
        raise ValueError(f"-o {args.output_dir} is a file; give a folder")
    source = Path(os.path.expanduser(args.source))
    if source.is_dir() and output.resolve() == source.resolve():
        raise ValueError(f"-o {args.output_dir} is the --source folder; write the converted model to another folder")
    existing = [name for name in OUTPUT_FILES if (output / name).exists()]
    if existing and not args.overwrite:
        raise FileExistsError(f"-o {args.output_dir} already holds {', '.join(existing)}; pass --overwrite to "
                              "replace them")  # fmt: skip


def load_config_file(path: str | None) -> ViQConfig | None:
    """The `ViQConfig` of `--config` (a `config.json` or a folder holding one), or `None`."""
    if path is None:
        return None
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    try:
        return ViQConfig.from_pretrained(path)
    except Exception as error:  # noqa: BLE001 - any unreadable config is a bad --config
        raise ValueError(f"cannot read --config {path}: {str(error).splitlines()[0]}") from None


def run(args: argparse.Namespace) -> dict:
    """Convert as the parsed options say (used by `main` and by `viq convert`)."""
    check_output_dir(args)
    return convert_viq_checkpoint(
        args.source,
        args.size,
        args.output_dir,
        check_images=args.check_image,
        push_to_hub=args.push_to_hub,
        config=load_config_file(args.config),
        revision=args.revision,
    )


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error (or VIQ_DEBUG=1)")
    args = parser.parse_args(argv)
    check_local_folder(args.source)
    configure("info")
    result = run(args)
    print(f"Converted {args.source} ({args.size}) to {result['output_dir']}: {result['codes_identical']} of "
          f"{result['codes_checked']} codes identical.")  # fmt: skip
    return 0


if __name__ == "__main__":
    from .exit_codes import run_main

    # errors are one line on stderr with the `viq` command's exit codes; --debug (or VIQ_DEBUG=1): the traceback
    sys.exit(run_main("convert_viq_original_to_hf", main))
