# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Public names of a package that load their submodule on first use (PEP 562), so that importing stays light."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def attach(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """
    `__getattr__` and `__dir__` for `package`, where `exports` maps each public name to the submodule (relative to
    the package) that defines it. A name is imported on first access and then cached in the package's namespace.
    """

    def __getattr__(name: str):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__


__all__ = ["attach"]
