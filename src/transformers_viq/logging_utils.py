# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""The package's one logger and its progress bars, configured by the `viq` command line and the scripts.

Every module logs through `get_logger(__name__)`, i.e. a child of the `transformers_viq` logger, which writes to
stderr at WARNING by default (like transformers' own root logger). The verbosity comes from
`TRANSFORMERS_VIQ_VERBOSITY` (`debug`, `info`, `warning`, `error`) or [`set_verbosity`]. [`configure`] sets the
verbosity of this package and of the libraries it drives (transformers, diffusers, datasets, huggingface_hub) in one
call, and turns every progress bar off or on.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings


LIBRARY_NAME = "transformers_viq"
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_lock = threading.Lock()
_handler: logging.Handler | None = None
_progress_bars_enabled = True
_DATASETS_ENV = "HF_DATASETS_DISABLE_PROGRESS_BARS"
_datasets_env_set = False  # whether `configure` set it (a value the user set is left alone)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time of the message (redirections and test captures included)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _root() -> logging.Logger:
    global _handler
    logger = logging.getLogger(LIBRARY_NAME)
    if _handler is None:
        with _lock:
            if _handler is None:
                _handler = _StderrHandler()
                _handler.setFormatter(logging.Formatter("[%(name)s] %(levelname)s: %(message)s"))
                logger.addHandler(_handler)
                env = os.environ.get("TRANSFORMERS_VIQ_VERBOSITY", "").lower()
                logger.setLevel(_LEVELS.get(env, logging.WARNING))
                logger.propagate = False
    return logger


def get_logger(name: str | None = None) -> logging.Logger:
    """The logger of a module of this package (`get_logger(__name__)`), under the package's root logger."""
    root = _root()
    if not name or name == LIBRARY_NAME:
        return root
    if not name.startswith(LIBRARY_NAME + "."):
        name = f"{LIBRARY_NAME}.{name}"
    return logging.getLogger(name)


def one_line(error: BaseException) -> str:
    """An error's message on one line (its first line, whitespace collapsed), for one-line reports."""
    text = str(error).strip() or type(error).__name__
    return " ".join(text.split("\n")[0].split())


def set_verbosity(level: int | str) -> None:
    """Level of the package's messages: `logging.INFO`, `"info"`, ..."""
    _root().setLevel(_LEVELS[level.lower()] if isinstance(level, str) else level)


def get_verbosity() -> int:
    return _root().getEffectiveLevel()


def progress_bars_enabled() -> bool:
    """Whether this package's progress bars are shown (on by default; off after `configure(progress=False)`)."""
    return _progress_bars_enabled and os.environ.get("TRANSFORMERS_VIQ_DISABLE_PROGRESS_BARS", "") not in ("1", "true")


def progress_bar(iterable=None, *, total=None, desc: str | None = None, unit: str = "it", disable: bool = False, **kw):
    """A tqdm progress bar that honours [`configure`]`(progress=False)` and stays off when stderr is not a terminal."""
    from tqdm.auto import tqdm

    disable = disable or not progress_bars_enabled() or not sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=False, **kw)


def configure(verbosity: int | str = logging.WARNING, progress: bool = True, libraries: bool = True) -> None:
    """
    Set up logging for a command-line run: this package at `verbosity`, the libraries it drives one step quieter
    (errors only unless `verbosity` is INFO or DEBUG), and every progress bar (this package's, transformers',
    datasets', huggingface_hub's) on or off.
    """
    global _progress_bars_enabled
    level = _LEVELS[verbosity.lower()] if isinstance(verbosity, str) else verbosity
    set_verbosity(level)
    _progress_bars_enabled = progress
    if not libraries:
        return
    library_level = level if level <= logging.INFO else logging.ERROR
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity(library_level)
    if progress:
        hf_logging.enable_progress_bar()
    else:
        hf_logging.disable_progress_bar()
    try:
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

        (enable_progress_bars if progress else disable_progress_bars)()
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency of transformers
        pass
    global _datasets_env_set
    # datasets reads this variable when it is imported, and afterwards refuses to turn its bars on while it is set
    if not progress and os.environ.get(_DATASETS_ENV) != "1":
        os.environ[_DATASETS_ENV] = "1"
        _datasets_env_set = True
    elif progress and _datasets_env_set:
        os.environ.pop(_DATASETS_ENV, None)
        _datasets_env_set = False
    for module, name in (("diffusers.utils.logging", "diffusers"), ("datasets.utils.logging", "datasets")):
        if sys.modules.get(module.split(".")[0]) is None:  # not imported (or its import is blocked)
            logging.getLogger(name).setLevel(library_level)  # configured before the library is even imported
            continue
        import importlib

        library = importlib.import_module(module)
        library.set_verbosity(library_level)
        toggle = getattr(library, "enable_progress_bar" if progress else "disable_progress_bar", None)
        if toggle is not None:
            with warnings.catch_warnings():  # datasets warns (and stays off) if imported while the variable was set
                warnings.simplefilter("ignore")
                toggle()


__all__ = [
    "configure",
    "get_logger",
    "get_verbosity",
    "one_line",
    "progress_bar",
    "progress_bars_enabled",
    "set_verbosity",
]
