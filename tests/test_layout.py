"""The layout shows the architecture: light import, leaves import no model, nothing imports the faces."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "transformers_viq"
LEAVES = ["models.viq.fsq", "models.viq.configuration_viq", "models.viq_qwen.configuration_viq_qwen",
          "original_checkpoint", "validation", "image_io",
          "codes_io", "file_utils", "logging_utils", "metrics", "lazy", "hub_utils", "llava_data",
          "synthetic"]  # fmt: skip
MODELS = ["transformers_viq.models.viq.modeling_viq", "transformers_viq.models.viq_qwen.modeling_viq_qwen"]


def modules_after(code: str) -> set[str]:
    """The modules loaded in a fresh interpreter after running `code`."""
    script = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def test_import_is_light_and_registers_the_auto_classes():
    loaded = modules_after("import transformers_viq\nfrom transformers import AutoConfig\nAutoConfig.for_model('viq')")
    heavy = {"diffusers", "datasets", "trl", "peft", "skimage", "lmms_eval", "PIL.ImageDraw"}
    services = ("cli", "pipeline", "extraction", "model_cards", "metrics", "visualization", "training",
                "convert_viq_original_to_hf")  # fmt: skip
    ours = {f"transformers_viq.{name}" for name in services}
    assert not loaded & (heavy | ours), sorted(loaded & (heavy | ours))


@pytest.mark.parametrize("leaf", LEAVES)
def test_leaves_import_no_model_class(leaf):
    """A leaf imports only other leaves (read from its source: lazily imported modules count too)."""
    path = PACKAGE / (leaf.replace(".", "/") + ".py")
    imported = {m.removeprefix("transformers_viq.") for m in _package_imports(path)}
    modules = {m for m in imported if m.replace(".", "/") + ".py" in _MODULE_FILES} - {"transformers_viq"}
    assert modules <= set(LEAVES), sorted(modules - set(LEAVES))


_MODULE_FILES = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")}


def _package_imports(path: Path) -> set[str]:
    """Modules of this package imported (anywhere, lazily too) by a source file, as dotted names."""
    tree = ast.parse(path.read_text())
    inside = path.is_relative_to(PACKAGE)
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]) if inside else ""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
                found.add(module)
                found.update(f"{module}.{alias.name}" for alias in node.names)
            elif node.module and node.module.startswith("transformers_viq"):
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("transformers_viq"))
    return found


def test_nothing_in_the_library_imports_the_faces():
    faces = ("transformers_viq.cli", "transformers_viq.convert_viq_original_to_hf", "transformers_viq.demo")
    for path in PACKAGE.rglob("*.py"):
        if path.stem in ("cli", "convert_viq_original_to_hf") or path.is_relative_to(PACKAGE / "demo"):
            continue
        imported = [name for name in _package_imports(path) if name.startswith(faces)]
        assert not imported, f"{path.relative_to(REPO)} imports a face: {imported}"


def test_scripts_use_the_library_not_the_cli():
    for folder in ("eval", "benchmarks", "examples", "training"):
        for path in (REPO / folder).rglob("*.py") if (REPO / folder).is_dir() else []:
            assert "transformers_viq.cli" not in _package_imports(path), f"{path.relative_to(REPO)} imports the CLI"


def test_the_models_read_the_authors_layout_through_the_leaf():
    imports = _package_imports(PACKAGE / "modeling_viq.py")
    assert "transformers_viq.original_checkpoint" in imports
    assert "transformers_viq.convert_viq_original_to_hf" not in imports
