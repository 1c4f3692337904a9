"""The harness that runs transformers' common tests (tests/models/transformers_common.py), without downloading."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest


sys.path.insert(0, str(Path(__file__).resolve().parent))
import transformers_common  # noqa: E402


def test_without_the_fetched_tests_the_import_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("VIQ_COMMON_TESTS_DIR", str(tmp_path / "absent"))
    with pytest.raises(ModuleNotFoundError, match="make common-tests"):
        transformers_common.import_common("test_modeling_common")


@pytest.fixture
def fresh_stand_ins(tmp_path, monkeypatch):
    """The stand-ins written into `tmp_path` and importable; the modules of a fetched cache are put back after."""
    transformers_common.write_stand_ins(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(tmp_path / "utils"))
    names = ("fetch_hub_objects_for_ci", transformers_common.PACKAGE)
    saved = {name: module for name, module in sys.modules.items() if name.startswith(names)}
    for name in saved:
        del sys.modules[name]
    yield tmp_path
    for name in [name for name in sys.modules if name.startswith(names)]:
        del sys.modules[name]
    sys.modules.update(saved)


def test_stand_ins_say_what_they_replace_and_refuse_to_fake_generation_tests(fresh_stand_ins):
    generation = importlib.import_module(f"{transformers_common.PACKAGE}.generation.test_utils")
    with pytest.raises(TypeError, match="not in its source distribution"):
        type("Tester", (generation.GenerationTesterMixin,), {})
    export = importlib.import_module(f"{transformers_common.PACKAGE}.exporters.test_export")
    assert not [name for name in vars(export.ExportTesterMixin) if name.startswith("test_")]
    config = importlib.import_module(f"{transformers_common.PACKAGE}.utils.test_configuration_utils")
    from transformers import PreTrainedConfig

    defaults = PreTrainedConfig()
    for key, value in config.config_common_kwargs.items():
        assert getattr(defaults, key) != value, key  # each value differs from the default, or the check is empty

    urls = importlib.import_module("fetch_hub_objects_for_ci")
    image = urls.url_to_local_path("https://example.invalid/fixtures/cat.png")
    assert Path(image).is_file() and Path(image).name == "cat.png"
    assert urls.url_to_local_path("https://example.invalid/clip.mp4") == "https://example.invalid/clip.mp4"


def test_in_tree_names_lists_classes_only_inside_the_block():
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    assert "viq" not in MODEL_MAPPING_NAMES
    with transformers_common.in_tree_names(MODEL_MAPPING_NAMES={"viq": "ViQModel"}):
        assert MODEL_MAPPING_NAMES["viq"] == "ViQModel"
    assert "viq" not in MODEL_MAPPING_NAMES


def test_summary_counts_test_functions_per_class():
    report = "\n".join([
        "PASSED tests/a.py::ModelTest::test_one",
        "PASSED tests/a.py::ModelTest::test_two",
        "SUBFAILED[x] tests/a.py::ModelTest::test_two - boom",
        "FAILED tests/a.py::ModelTest::test_three - boom",
        "PASSED tests/a.py::ProcessorTest::test_one",
        "SKIPPED [1] tests/a.py:3: reason",
    ])  # fmt: skip
    summary = transformers_common.summarize(report)
    assert summary["ModelTest"] == {"passed": {"test_one"}, "failed": {"test_two", "test_three"}}
    assert summary["ProcessorTest"] == {"passed": {"test_one"}, "failed": set()}
