# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Exit codes and one-line error reports, shared by the `viq` command and the scripts (`training/`, `eval/`,
`examples/`, the converter), so that every face says an expected error the same way: one line on stderr,
`PROG: error: MESSAGE`, and the same exit code for the same cause.

    0    success
    1    runtime or model error (cannot load or run a model, out of memory, a missing optional dependency)
    2    usage error or bad input (a bad option or recipe, a missing file or folder, unreadable data)
    3    codes made with a different codebook than the model
    4    the Hugging Face Hub cannot be reached or refused the request
    130  interrupted

`--debug` (or `VIQ_DEBUG=1` in the environment) adds the traceback; the exit code stays the same.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable

from .logging_utils import one_line


EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INCOMPATIBLE = 3
EXIT_HUB = 4
EXIT_INTERRUPTED = 130

DEBUG_ENV = "VIQ_DEBUG"


def debug_requested(argv: list[str] | None = None) -> bool:
    """`--debug` among the arguments, or `VIQ_DEBUG` set to 1/true/yes/on."""
    if argv is not None and "--debug" in argv:
        return True
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def exit_code(error: BaseException) -> int:
    """The exit code of an error: 4 for a Hub or network failure anywhere in its chain, 3 for codes of another
    codebook, 2 for bad input (`FileNotFoundError`, `FileExistsError`, `ValueError`), 1 for anything else."""
    from .hub_utils import hub_error_reason
    from .models.viq.validation_viq import IncompatibleCodebookError

    if hub_error_reason(error) is not None:
        return EXIT_HUB
    if isinstance(error, IncompatibleCodebookError):
        return EXIT_INCOMPATIBLE
    if isinstance(error, (FileNotFoundError, FileExistsError, NotADirectoryError, ValueError)):
        return EXIT_USAGE
    return EXIT_RUNTIME


def error_message(error: BaseException, debug: bool = False) -> str:
    """What went wrong, in one line: the Hub failure if that is the cause; for an error that no input explains (a
    bug, a failing library), its type and a pointer to `--debug`."""
    from .hub_utils import hub_error_reason

    reason = hub_error_reason(error)
    if reason is not None:
        return reason
    if exit_code(error) == EXIT_RUNTIME and not isinstance(error, (ImportError, OSError, RuntimeError)):
        hint = "" if debug else f" (run with --debug or {DEBUG_ENV}=1 for the traceback)"
        return f"{type(error).__name__}: {one_line(error)}{hint}"
    return one_line(error)


def report(prog: str, error: BaseException, debug: bool = False) -> int:
    """Print `PROG: error: MESSAGE` on stderr (after the traceback with `debug`) and return the exit code."""
    if debug:
        traceback.print_exception(error)
    print(f"{prog}: error: {error_message(error, debug)}", file=sys.stderr)
    return exit_code(error)


def run_main(prog: str, main: Callable[..., object], *args, debug: bool | None = None) -> int:
    """
    Run a script's `main(*args)` and turn an error into one line on stderr and its exit code (see the module
    docstring). `debug` defaults to `--debug` among `sys.argv` or `VIQ_DEBUG=1`. A `main` that returns an int
    returns that exit code; `SystemExit` (argparse's usage errors) passes through.
    """
    if debug is None:
        debug = debug_requested(sys.argv[1:])
    try:
        result = main(*args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 - every error is one line (the traceback with --debug)
        return report(prog, error, debug)
    return result if isinstance(result, int) else EXIT_OK


__all__ = [
    "DEBUG_ENV",
    "EXIT_HUB",
    "EXIT_INCOMPATIBLE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_RUNTIME",
    "EXIT_USAGE",
    "debug_requested",
    "error_message",
    "exit_code",
    "report",
    "run_main",
]
