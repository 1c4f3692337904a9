"""What the eval scripts share: their entry point (errors to one line and an exit code), listing a folder of images.

The scripts import it as a sibling module (`import eval_utils`), which works when they run as `python eval/x.py`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from transformers_viq.exit_codes import EXIT_HUB, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, debug_requested, run_main
from transformers_viq.logging_utils import configure


__all__ = ["EXIT_HUB", "EXIT_OK", "EXIT_RUNTIME", "EXIT_USAGE", "list_images", "run_script"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


def list_images(folder: str | Path, recursive: bool = False) -> list[Path]:
    """The image files of a folder, sorted; raises a `ValueError` (exit 2) for a missing folder or no images."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    files = sorted(p for p in candidates if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return files


def run_script(prog: str, parser: argparse.ArgumentParser, run: Callable, argv: list[str] | None = None) -> int:
    """
    Parse, configure logging (`--quiet` turns progress bars off) and run. Errors become one line on stderr and the
    `viq` command's exit codes (`transformers_viq.exit_codes`): 2 for bad input (`FileNotFoundError`, `ValueError`),
    4 when the Hub cannot be reached, 1 for the rest (`ModelLoadError`, `RuntimeError`, a missing optional
    `ImportError`); `--debug` (or `VIQ_DEBUG=1`) adds the traceback.
    """
    if not any("--debug" in action.option_strings for action in parser._actions):
        parser.add_argument("--debug", action="store_true", help="print the traceback of an error (or VIQ_DEBUG=1)")
    args = parser.parse_args(argv)
    configure("warning", progress=not getattr(args, "quiet", False))
    return run_main(prog, run, args, debug=args.debug or debug_requested())
