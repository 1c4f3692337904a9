"""Shared fixtures (the tiny models themselves come from `transformers_viq.testing`) and the `slow` marker."""

from __future__ import annotations

import os

import pytest

from transformers_viq.testing import make_tiny_model


@pytest.fixture
def tiny_model():
    return make_tiny_model()


def pytest_collection_modifyitems(config, items):
    if os.environ.get("RUN_SLOW", "0") not in ("1", "true", "yes"):
        skip = pytest.mark.skip(reason="slow: full-size check, set RUN_SLOW=1 to run")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)
