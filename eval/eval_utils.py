"""What the eval scripts share: their entry point (errors to one line and an exit code), listing a folder of images.

The scripts import it as a sibling module (`import eval_utils`), which works when they run as `python eval/x.py`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from transformers_viq.logging_utils import configure, one_line
from transformers_viq.pipeline import ModelLoadError


EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2
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
    Parse, configure logging (`--quiet` turns progress bars off) and run. Errors become one line on stderr and an
    exit code: 2 for bad input (`FileNotFoundError`, `ValueError`), 1 for the rest (`ModelLoadError`, `RuntimeError`,
    a missing optional `ImportError`).
    """
    args = parser.parse_args(argv)
    configure("warning", progress=not getattr(args, "quiet", False))
    try:
        run(args)
    except (FileNotFoundError, ValueError) as error:  # bad input: a missing file or folder, an unreadable image
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    except (ModelLoadError, RuntimeError, ImportError) as error:
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return EXIT_RUNTIME
    return EXIT_OK
