# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Export the demo as a self-contained Hugging Face Space folder, ready for one `hf upload ... --repo-type space`.

The folder holds the repository's `demo/app.py`, `demo/requirements.txt` and `demo/README.md` (whose front matter is
the Space's metadata: Gradio SDK and version, app file), a copy of this package (`transformers_viq/`, imported from
the Space's root since it is not on PyPI), the tokenizer (and VLM) when they are local folders, the sample images,
and `space.json`, which tells `app.py` what to run.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..demo import BUNDLED_MODEL_NOTE, REPOSITORY, SPACE_CONFIG, bundled_paths


SPACE_FILES = ("app.py", "requirements.txt", "README.md")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".DS_Store")


def _prepare(folder: Path, overwrite: bool) -> None:
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} is a file; give a folder for the Space")
    if folder.is_dir() and any(folder.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{folder} is not empty; pass --overwrite to replace its contents")
        for entry in folder.iterdir():
            if entry.name == ".git":  # a clone of the Space repository keeps its history
                continue
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    folder.mkdir(parents=True, exist_ok=True)


def _copy_model(source: str, folder: Path, name: str) -> str:
    """A local model folder is copied into the Space as `name/`; a Hub id stays an id (the Space downloads it)."""
    path = Path(os.path.expanduser(source))
    if path.is_dir():
        shutil.copytree(path, folder / name, ignore=IGNORED)
        return name
    if source.startswith((".", "/", "~")):
        raise FileNotFoundError(f"no such model folder: {source}")
    return source


def export_space(output: str | os.PathLike, model: str | None = None, size: str | None = None,
                 vlm: str | None = None, samples: str | os.PathLike | None = None,
                 app_dir: str | os.PathLike | None = None, overwrite: bool = False) -> Path:  # fmt: skip
    """
    Write the Space folder `output` and return its path.

    Args:
        output: the folder to write (must be empty or new unless `overwrite`).
        model, size: the tokenizer the Space runs (default: the bundled one, copied in).
        vlm: a saved ViQ VLM (folder, copied in, or Hub id) for the question box.
        samples: a folder of sample images (default: the bundled samples).
        app_dir: the folder holding `app.py`, `requirements.txt` and `README.md` (default: the repository's `demo/`).

    Raises:
        `FileNotFoundError` when the Space's files or a local model are missing; `FileExistsError` when `output`
        is not empty and `overwrite` is not set.
    """
    source = Path(app_dir).resolve() if app_dir is not None else REPOSITORY / "demo"
    missing = [name for name in SPACE_FILES if not (source / name).is_file()]
    if missing:
        raise FileNotFoundError(f"the Space's files {', '.join(missing)} are not in {source} (they are in the "
                                f"repository's demo/ folder: export from a checkout)")  # fmt: skip
    bundled = bundled_paths(source)
    model = model or bundled.get("model")
    if model is None:
        raise FileNotFoundError("no bundled model to copy: pass --model")
    samples = samples or bundled.get("samples")
    output = Path(output).resolve()
    if source == output or source in output.parents:
        raise ValueError(f"write the Space outside {source}")
    _prepare(output, overwrite)
    for name in SPACE_FILES:
        shutil.copy2(source / name, output / name)
    package = Path(__file__).resolve().parents[1]
    shutil.copytree(package, output / package.name, ignore=IGNORED)
    config = {"model": _copy_model(str(model), output, "model"), "size": size, "host": "0.0.0.0"}
    if model == bundled.get("model"):
        config["model_note"] = BUNDLED_MODEL_NOTE
    if vlm:
        config["vlm"] = _copy_model(str(vlm), output, "vlm")
    if samples:
        (output / "samples").mkdir()
        for path in sorted(Path(samples).iterdir()):
            if path.is_file() and path.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"):
                shutil.copy2(path, output / "samples" / path.name)
        config["samples"] = "samples"
    # a Hub model needs the network on the Space; local copies run offline
    config["online"] = config["model"] != "model" or config.get("vlm", "vlm") != "vlm"
    (output / SPACE_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return output


__all__ = ["SPACE_FILES", "export_space"]
