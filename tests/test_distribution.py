"""The package is a real distribution: its wheel carries everything the package reads at run time and declares its
console script and lmms-eval entry point; installed on its own in a fresh environment it works (.ci/check_dist)."""

from __future__ import annotations

import configparser
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]


def test_the_wheel_carries_the_package_data_and_entry_points(tmp_path):
    # the installed build backend, without isolation: no download
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), str(REPO)], check=True, capture_output=True, text=True)  # fmt: skip
    (wheel,) = tmp_path.glob("transformers_viq-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    package = REPO / "src" / "transformers_viq"
    run_time_files = [p for p in package.rglob("*") if p.is_file() and p.suffix in (".py", ".md", ".typed")
                      and "__pycache__" not in p.parts]  # fmt: skip
    missing = {p.relative_to(package.parent).as_posix() for p in run_time_files} - names
    assert not missing, f"not in the wheel: {sorted(missing)}"
    templates = {f"transformers_viq/model_card_templates/{p.name}"
                 for p in (package / "model_card_templates").iterdir()}  # fmt: skip
    assert len(templates) >= 2 and templates | {"transformers_viq/py.typed"} <= names  # read at run time
    info = next(name for name in names if name.endswith(".dist-info/entry_points.txt"))
    entry_points = configparser.ConfigParser()
    entry_points.read_string(zipfile.ZipFile(wheel).read(info).decode())
    assert entry_points["console_scripts"]["viq"] == "transformers_viq.cli:main"
    assert entry_points["lmms_eval.models"]["viq_qwen"] == "transformers_viq.integrations:lmms_eval_models"


@pytest.mark.slow
def test_the_built_wheel_works_installed_on_its_own():
    """Build, twine check, install in a fresh venv, then the CLI, an encode, the Auto classes and lmms-eval there."""
    result = subprocess.run(["bash", str(REPO / ".ci" / "check_dist")], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    assert "work installed on their own" in result.stdout
