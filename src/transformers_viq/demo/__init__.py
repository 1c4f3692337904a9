# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""The ViQ demo page (Gradio): an image in, its codes, their bytes against PNG and JPEG, the reconstruction with
PSNR/SSIM, a codes file out and back in, and with a VLM a question answered from the codes.

    python demo/app.py                              # the bundled tokenizer, offline, http://127.0.0.1:7860
    python demo/app.py --model XuminYu/ViQ_weights --size 16k --online
    python demo/app.py --vlm outputs/tiny-sft       # adds the question box
    python demo/app.py --export-space outputs/viq-space   # a folder to push as a Hugging Face Space

* `backend`: what the page computes (no web framework), one model shared by every request;
* `page`: the Gradio Blocks;
* `space`: the export of a self-contained Space folder.

A face of the package, as the CLI is: nothing in the library imports it. Needs the `demo` extra (gradio) and the
`eval` extra (PSNR/SSIM).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


# The tokenizer the page runs by default, relative to a checkout of the repository (or to an exported Space folder,
# where `space.json` names its copy). One place to change when another bundled tokenizer replaces it.
BUNDLED_MODEL = "examples/tiny-viq"
BUNDLED_MODEL_NOTE = (
    "This is the tiny random smoke checkpoint bundled with the repository: its codes carry no meaning and its "
    "reconstructions are not faithful; it shows what the page does. For the real tokenizer run "
    "`python demo/app.py --model XuminYu/ViQ_weights --size 16k --online`."
)
BUNDLED_SAMPLES = "assets/samples"
SPACE_CONFIG = "space.json"  # written by the export, read by `main` when it starts from the Space's folder
DEFAULT_PORT = 7860

REPOSITORY = Path(__file__).resolve().parents[3]  # src/transformers_viq/demo -> the checkout (editable installs)


def bundled_paths(app_dir: str | os.PathLike | None = None) -> dict:
    """
    Where the default model and samples are: from `app_dir/space.json` in an exported Space folder, else in the
    checkout that holds `app_dir` (the repository's `demo/`) or this package. Paths are absolute; a value is `None`
    when nothing is there (an installed wheel has no bundled model).
    """
    if app_dir is not None:
        app_dir = Path(app_dir).resolve()
        config_file = app_dir / SPACE_CONFIG
        if config_file.is_file():
            config = json.loads(config_file.read_text())
            resolved = dict(config)
            for key in ("model", "vlm", "samples"):
                value = config.get(key)
                if value and (app_dir / value).exists():
                    resolved[key] = str(app_dir / value)
            return resolved
        roots = [app_dir.parent, REPOSITORY]
    else:
        roots = [REPOSITORY]
    for root in roots:
        if (root / BUNDLED_MODEL / "config.json").is_file():
            samples = root / BUNDLED_SAMPLES
            return {"model": str(root / BUNDLED_MODEL), "model_note": BUNDLED_MODEL_NOTE,
                    "samples": str(samples) if samples.is_dir() else None}  # fmt: skip
    return {"model": None, "samples": None}


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The demo's options (shared by `demo/app.py` and `python -m transformers_viq.demo`)."""
    model = parser.add_argument_group("model")
    model.add_argument("--model", default=None,
                       help=f"tokenizer: an HF-format folder or Hub id, or the authors' layout with --size "
                       f"(default: the bundled {BUNDLED_MODEL})")  # fmt: skip
    model.add_argument("--size", default=None, help="2k/4k/8k/16k/64k: read the authors' published layout")
    model.add_argument("--vlm", default=None, metavar="FOLDER",
                       help="a saved ViQ VLM (folder or Hub id, with its processor): adds a question box")  # fmt: skip
    model.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    model.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    model.add_argument("--max-pixels", type=int, default=None, help="pixel budget per image (default: the model's)")
    model.add_argument("--threads", type=int, default=None,
                       help="torch CPU threads (default: torch's, one per core; on a machine that other jobs keep "
                       "busy, 1 avoids threads waiting for each other)")  # fmt: skip
    model.add_argument("--max-new-tokens", type=int, default=64, help="length of the VLM's answers (default 64)")
    model.add_argument("--online", action="store_true",
                       help="allow downloads from the Hugging Face Hub (default: offline, the local cache only)")
    serve = parser.add_argument_group("serving")
    serve.add_argument("--host", default=None,
                       help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 for all; an "
                       "exported Space listens on 0.0.0.0)")  # fmt: skip
    serve.add_argument("--port", type=int, default=None,
                       help=f"port (default $GRADIO_SERVER_PORT, else {DEFAULT_PORT})")  # fmt: skip
    serve.add_argument("--samples", default=None, metavar="DIR", help="folder of sample images for the picker")
    export = parser.add_argument_group("export")
    export.add_argument("--export-space", default=None, metavar="DIR",
                        help="write a self-contained Hugging Face Space folder (app, requirements, README with "
                        "the Space's metadata, this package, the model if local, the samples) and exit")
    export.add_argument("--overwrite", action="store_true", help="replace an existing --export-space folder")
    return parser


def _sample_files(folder) -> list[Path]:
    from PIL import Image

    if not folder:
        return []
    extensions = {extension.lower() for extension in Image.registered_extensions()}
    return sorted(path for path in Path(folder).iterdir() if path.suffix.lower() in extensions)


def _error(message: str, code: int = 2) -> int:
    print(f"demo: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None, app_dir: str | os.PathLike | None = None) -> int:
    """
    Start the demo page (or, with `--export-space`, write a Space folder). `app_dir`: the folder of the calling
    `app.py`, where the bundled model and samples are looked up (see [`bundled_paths`]). Returns an exit code:
    0, 1 (the model cannot load), 2 (a bad option).
    """
    prog = "python -m transformers_viq.demo" if app_dir is None else "python app.py"
    parser = add_arguments(argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0]))
    args = parser.parse_args(argv)
    bundled = bundled_paths(app_dir)
    if args.export_space:
        from .space import export_space

        try:
            folder = export_space(args.export_space, model=args.model, size=args.size, vlm=args.vlm,
                                  samples=args.samples, app_dir=app_dir, overwrite=args.overwrite)  # fmt: skip
        except (FileExistsError, FileNotFoundError, ValueError) as error:
            return _error(str(error))
        print(f"wrote the Space to {folder}/; push it with:\n  hf upload USER/SPACE_NAME {folder} . --repo-type space")
        return 0
    if not args.online and not bundled.get("online"):
        os.environ["HF_HUB_OFFLINE"] = "1"  # read by this package's loaders at each call
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    model = args.model or bundled.get("model")
    if model is None:
        return _error(f"no bundled model here ({BUNDLED_MODEL} is in a checkout of the repository): pass --model")
    note = bundled.get("model_note") if args.model is None else None
    samples = _sample_files(args.samples or bundled.get("samples"))
    import torch

    from ..pipeline import ModelLoadError
    from .backend import DemoBackend

    if args.threads:
        torch.set_num_threads(args.threads)

    try:
        size = args.size or (bundled.get("size") if args.model is None else None)
        backend = DemoBackend.from_pretrained(model, size, vlm=args.vlm or bundled.get("vlm"), device=args.device,
                                              dtype=args.dtype, max_pixels=args.max_pixels, model_note=note,
                                              max_new_tokens=args.max_new_tokens)  # fmt: skip
    except (FileNotFoundError, ValueError) as error:
        return _error(str(error))
    except ModelLoadError as error:
        offline = " (the demo runs offline unless --online is given)" if os.environ.get("HF_HUB_OFFLINE") else ""
        return _error(f"{error}{offline}", 1)
    host = args.host or bundled.get("host") or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    port = args.port or int(os.environ.get("GRADIO_SERVER_PORT") or DEFAULT_PORT)
    serve(backend, samples, host=host, port=port)
    return 0


def serve(backend, samples, host: str = "127.0.0.1", port: int = DEFAULT_PORT, block: bool = True):
    """Launch the page for `backend` on `host:port`; with `block=False`, return the running Blocks."""
    import gradio as gr

    from .page import build_page

    page = build_page(backend, samples)
    page.queue(default_concurrency_limit=4)
    # system fonts: the page asks nothing of other servers (offline machines, closed networks)
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # fmt: skip
    page.launch(server_name=host, server_port=port, prevent_thread_lock=not block, theme=theme, ssr_mode=False,
                max_file_size="50mb", allowed_paths=[str(backend.work_dir)], footer_links=[])  # fmt: skip
    return page


__all__ = ["BUNDLED_MODEL", "BUNDLED_MODEL_NOTE", "add_arguments", "bundled_paths", "main", "serve"]
