"""
transformers' own common tests, run on the ViQ classes as transformers runs them on its in-tree models.

The mixins (`ModelTesterMixin`, `ConfigTester`, `ImageProcessingTestMixin`, `ProcessorTesterMixin`) live in the
`tests/` folder of transformers' source distribution, not in its wheel, and this project copies none of them: this
module downloads the sdist of the installed transformers version with pip and extracts its top-level `tests/*.py`
into a cache folder (outside the repository), as the package `hf_common_tests` so that it cannot clash with this
project's `tests/`.

The sdist's `tests/` lacks some modules that those files import at their top. They are replaced by stand-ins that
do exactly one thing each and say so:

* `hf_common_tests.generation.test_utils.GenerationTesterMixin`: transformers' generation tests are not in the
  sdist, so none of them can run here. The stand-in refuses to be subclassed, so no tester can claim that coverage;
  this project's own tests check the generation behaviours (assisted decoding with images, generate with and
  without `position_ids`).
* `hf_common_tests.exporters.test_export.ExportTesterMixin`: a base class of `ModelTesterMixin`; the stand-in
  adds no test (no `torch.export` test runs).
* `hf_common_tests.utils.test_configuration_utils.config_common_kwargs`: values, each different from
  `PreTrainedConfig`'s default, for the general config attributes that `ConfigTester` checks a config accepts.
* `utils/fetch_hub_objects_for_ci.url_to_local_path`: transformers' CI maps test-file URLs to files it downloaded
  beforehand; here an image URL maps to a local image of the same name made by the stand-in (deterministic pixels,
  not the original picture), any other URL is returned as it is (tests that read such a file need the network).

The package `parameterized`, which the test files import, is installed into the cache folder with pip.

Use: `make common-tests` (or `python tests/models/transformers_common.py fetch`, then
`RUN_SLOW=1 pytest tests/models/viq/test_common_viq.py tests/models/viq_qwen/test_common_viq_qwen.py`). The cache
folder is `$VIQ_COMMON_TESTS_DIR`, by default `~/.cache/transformers-viq/common-tests/transformers-<version>`. The
test files skip, with the reason, when it has not been fetched.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import warnings
from pathlib import Path
from unittest import mock


PACKAGE = "hf_common_tests"
MODULES = ("test_modeling_common", "test_configuration_common", "test_image_processing_common",
           "test_processing_common")  # fmt: skip

STAND_INS = {
    "generation/test_utils.py": '''"""
Stand-in written by transformers-viq's harness, tests/models/transformers_common.py.

transformers' tests/generation/ is not part of its source distribution, so its generate() common tests cannot run
here. test_modeling_common imports this name at its top; subclassing it raises, so that no tester can claim the
coverage it does not have.
"""


class GenerationTesterMixin:
    def __init_subclass__(cls, **kwargs):
        raise TypeError(
            "transformers' GenerationTesterMixin is not in its source distribution: the generation common tests "
            "cannot run from it (this class is the harness's stand-in)."
        )
''',
    "exporters/test_export.py": '''"""
Stand-in written by transformers-viq's harness, tests/models/transformers_common.py.

transformers' tests/exporters/ is not part of its source distribution. ModelTesterMixin derives from this class;
the stand-in adds no test, so no torch.export common test runs.
"""


class ExportTesterMixin:
    pass
''',
    "utils/test_configuration_utils.py": '''"""
Stand-in written by transformers-viq's harness, tests/models/transformers_common.py.

transformers' tests/utils/ is not part of its source distribution. ConfigTester builds a config from these general
attributes and checks that each is kept; every value differs from PreTrainedConfig's default.
"""

config_common_kwargs = {
    "return_dict": False,
    "output_hidden_states": True,
    "dtype": "float16",
    "chunk_size_feed_forward": 5,
    "architectures": ["ViQStandInModel"],
    "problem_type": "regression",
}
''',
}

# test_processing_common and test_image_processing_common put `<sdist root>/utils` on sys.path and import this.
URL_STAND_IN = '''"""
Stand-in written by transformers-viq's harness, tests/models/transformers_common.py.

transformers' CI downloads the files behind test URLs beforehand and maps each URL to its local copy. This harness
downloads nothing: an image URL maps to a local image of the same file name, made here once (deterministic pixels,
not the original picture: the tests that use them check processing, not content); other URLs are returned as they
are (a test that reads one needs the network).
"""

import os
import zlib

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "images")


def url_to_local_path(url, return_url_if_not_found=True):
    name = url.rsplit("/", 1)[-1]
    if not name.lower().endswith(IMAGE_EXTENSIONS):
        return url
    path = os.path.join(FOLDER, name)
    if not os.path.exists(path):
        os.makedirs(FOLDER, exist_ok=True)
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        pixels = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)
    return path
'''


def transformers_version() -> str:
    import transformers

    return transformers.__version__


def cache_dir(version: str | None = None) -> Path:
    """The folder holding `hf_common_tests/`, `utils/` and `site/` (pip's target for `parameterized`)."""
    root = os.environ.get("VIQ_COMMON_TESTS_DIR")
    if root:
        return Path(root)
    version = version or transformers_version()
    return Path.home() / ".cache" / "transformers-viq" / "common-tests" / f"transformers-{version}"


def is_fetched(folder: Path | None = None) -> bool:
    folder = folder or cache_dir()
    return (folder / ".complete").is_file()


def fetch(version: str | None = None, folder: Path | None = None) -> Path:
    """Download transformers' sdist and lay out the importable test package in `folder` (nothing if done)."""
    version = version or transformers_version()
    folder = folder or cache_dir(version)
    if is_fetched(folder):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as download:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        f"transformers=={version}", "-d", download], check=True)  # fmt: skip
        archives = list(Path(download).glob("transformers-*.tar.gz"))
        if len(archives) != 1:
            raise RuntimeError(f"Expected one transformers sdist from pip, got {[a.name for a in archives]}.")
        package = folder / PACKAGE
        package.mkdir(exist_ok=True)
        with tarfile.open(archives[0]) as archive:
            members = [m for m in archive.getmembers()
                       if m.isfile() and len(Path(m.name).parts) == 3 and Path(m.name).parts[1] == "tests"
                       and m.name.endswith(".py")]  # fmt: skip
            missing = [name for name in MODULES if not any(Path(m.name).stem == name for m in members)]
            if missing:
                raise RuntimeError(f"transformers {version}'s sdist has no tests/{missing[0]}.py.")
            for member in members:
                (package / Path(member.name).name).write_bytes(archive.extractfile(member).read())
    write_stand_ins(folder)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(folder / "site"),
                    "parameterized==0.9.0"], check=True)  # fmt: skip
    (folder / ".complete").write_text(version + "\n")
    return folder


def write_stand_ins(folder: Path) -> None:
    """(Re)write the stand-in modules, so that a cache fetched by an older harness gets the current ones."""
    package = folder / PACKAGE
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").touch()
    for relative, text in STAND_INS.items():
        path = package / relative
        path.parent.mkdir(exist_ok=True)
        (path.parent / "__init__.py").touch()
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
    url_module = folder / "utils" / "fetch_hub_objects_for_ci.py"
    url_module.parent.mkdir(exist_ok=True)
    if not url_module.is_file() or url_module.read_text() != URL_STAND_IN:
        url_module.write_text(URL_STAND_IN)


def import_common_or_skip(*names: str) -> list:
    """The common test modules `names` (as `import_common`), or a module-level pytest skip that says why they are
    missing: what a test module of this folder calls at its top."""
    import pytest

    try:
        return [import_common(name) for name in names]
    except ModuleNotFoundError as error:
        pytest.skip(str(error), allow_module_level=True)


def import_common(name: str):
    """Import `hf_common_tests.<name>` from the fetched cache; raises `ModuleNotFoundError` if not fetched."""
    folder = cache_dir()
    if not is_fetched(folder):
        raise ModuleNotFoundError(
            f"transformers' common tests are not fetched into {folder}: run `make common-tests` (or "
            "`python tests/models/transformers_common.py fetch`; needs pip's registry)."
        )
    write_stand_ins(folder)
    for path in (folder / "site", folder):
        if str(path) not in sys.path:
            sys.path.append(str(path))
    with warnings.catch_warnings():
        # the modules mark tests with transformers' own pytest marks (flash_attn_test, ...), unknown here
        import pytest

        warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
        return importlib.import_module(f"{PACKAGE}.{name}")


@contextlib.contextmanager
def in_tree_names(**tables: dict[str, str]):
    """
    Within the block, transformers' static name tables of `transformers.models.auto.modeling_auto` (e.g.
    `MODEL_MAPPING_NAMES=`, model type -> class name) also list the given entries. The mixins read those tables to
    know what a class is: `test_training` leaves base models (`MODEL_MAPPING_NAMES`) out and gives labels to the
    classes of the causal-LM and image-text-to-text tables. ViQ's classes are registered at import, which fills the
    Auto classes but not these tables; listing them here tests them as transformers tests its in-tree classes of
    the same kind (the kinds they are registered as).
    """
    from transformers.models.auto import modeling_auto

    with contextlib.ExitStack() as stack:
        for name, entries in tables.items():
            stack.enter_context(mock.patch.dict(getattr(modeling_auto, name), entries))
        yield


def summarize(report: str) -> dict[str, dict[str, set[str]]]:
    """
    Per test class, the test functions that passed and those that failed, from the short summary of a pytest run
    with `-rA` (a function counts as failed if it or one of its subtests failed).
    """
    classes: dict[str, dict[str, set[str]]] = {}
    for line in report.splitlines():
        match = re.match(r"(PASSED|FAILED|ERROR|SUBFAILED\S*) \S+::(\w+)::(\w+)", line)
        if match:
            outcome, test_class, function = match.groups()
            entry = classes.setdefault(test_class, {"passed": set(), "failed": set()})
            entry["passed" if outcome == "PASSED" else "failed"].add(function)
    for entry in classes.values():
        entry["passed"] -= entry["failed"]
    return classes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("command", choices=["fetch", "where", "summary"],
                        help="fetch: download and lay out the tests; where: print their folder; summary: count "
                             "passed and failed test functions per class in a pytest -rA report")  # fmt: skip
    parser.add_argument("report", nargs="?", help="summary: the file holding pytest's -rA output")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        print(fetch())
    elif args.command == "where":
        print(cache_dir())
    else:
        if args.report is None:
            parser.error("summary needs the report file")
        for test_class, entry in sorted(summarize(Path(args.report).read_text()).items()):
            failed = ", ".join(sorted(entry["failed"]))
            print(f"{test_class}: {len(entry['passed'])} passed, {len(entry['failed'])} failed"
                  + (f" ({failed})" if failed else ""))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
