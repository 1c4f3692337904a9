"""The layout shows the architecture: self-contained model folders, services on top of them, faces on top of both.

Imports are read from the sources (lazy imports inside functions count too):

* a model folder (`models/viq/`, `models/viq_qwen/`) imports torch, transformers, diffusers (and the standard
  library, NumPy, Pillow, safetensors) and its sibling model folder, nothing else of the package;
* services import the models, never the reverse, and no two modules import each other, directly or round a circle;
* the faces (`cli`, the converter script, the demo) are imported by nothing in the library.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "transformers_viq"
MODELS = PACKAGE / "models"
# What a model file may import besides the standard library: what a model pushed with its code needs where only
# transformers, torch, diffusers, Pillow and safetensors are installed (NumPy and huggingface_hub come with
# transformers; flash-attn is an optional kernel, imported only where it is installed).
MODEL_DEPENDENCIES = {"torch", "transformers", "diffusers", "numpy", "PIL", "safetensors", "huggingface_hub",
                      "flash_attn"}  # fmt: skip
# Utilities at the bottom of the services: they import nothing of the package.
UTILITIES = ["file_utils", "hub_utils", "lazy", "logging_utils"]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _package_imports(path: Path) -> set[str]:
    """Modules of this package that a source file imports (anywhere, lazily too), as dotted module names."""
    inside = path.is_relative_to(PACKAGE)
    name = _module_name(path) if inside else ""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            elif node.module and node.module.startswith("transformers_viq"):
                module = node.module
            else:
                continue
            submodules = {f"{module}.{alias.name}" for alias in node.names} & set(MODULES)
            found |= submodules or {module}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("transformers_viq")}
    return found - {name}


def _third_party_imports(path: Path) -> set[str]:
    """Top-level names of the absolute imports of a source file that are neither the standard library nor ours."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"transformers_viq"}


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


@pytest.mark.parametrize("path", sorted(MODELS.rglob("*.py")), ids=lambda path: str(path.relative_to(MODELS)))
def test_model_files_import_only_the_model_folders_and_their_dependencies(path):
    outside = sorted(name for name in _package_imports(path) if not name.startswith("transformers_viq.models"))
    assert not outside, f"{path.relative_to(REPO)} imports a service: {outside}"
    extra = sorted(_third_party_imports(path) - MODEL_DEPENDENCIES)
    assert not extra, f"{path.relative_to(REPO)} needs {extra}, which a model pushed with its code cannot rely on"


def test_services_import_the_models():
    """The services that build on the model classes reach them through `models/` (the direction of the layout)."""
    for service in ("original_checkpoint", "model_cards", "codes_io", "pipeline", "extraction", "image_io"):
        imported = _package_imports(MODULES[f"transformers_viq.{service}"])
        assert any(name.startswith("transformers_viq.models.") for name in imported), service


@pytest.mark.parametrize("utility", UTILITIES)
def test_utilities_import_nothing_of_the_package(utility):
    assert not _package_imports(MODULES[f"transformers_viq.{utility}"])


def test_no_module_imports_a_public_name_through_the_package_root():
    """Inside the package, names come from the module that defines them, not from `transformers_viq` itself (whose
    lazy names would otherwise tie every module to every other); the version is the one name the root defines."""
    for name, path in MODULES.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or node.module not in (None, "transformers_viq"):
                continue
            root = node.module == "transformers_viq" or package.count(".") + 1 == node.level
            names = {alias.name for alias in node.names} - {"__version__"} - {m.rpartition(".")[2] for m in MODULES}
            assert not (root and names), f"{path.relative_to(REPO)} imports {sorted(names)} from the package root"


def test_no_import_circles():
    """
    No two modules import each other, directly or round a longer circle (lazy imports count). A package's
    `__init__.py` reaching into its own submodules (the facade that names what they define) is not a circle.
    """
    graph = {}
    for name, path in MODULES.items():
        edges = _package_imports(path)
        if path.name == "__init__.py":
            edges = {edge for edge in edges if not edge.startswith(name + ".")}
        graph[name] = edges & set(MODULES)
    circles = [component for component in _strongly_connected(graph) if len(component) > 1]
    assert not circles, circles


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of a directed graph, iteratively."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def test_the_circle_check_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert [c for c in _strongly_connected(graph) if len(c) > 1] == [["a", "b", "c"]]


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


def test_the_authors_layout_is_read_by_one_service():
    """Only `original_checkpoint` reads PyTorch pickles (the `.pth` files of the authors' layout)."""
    readers = sorted(name for name, path in MODULES.items() if "torch.load(" in path.read_text())
    assert readers == ["transformers_viq.original_checkpoint"], readers
