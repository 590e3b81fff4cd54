"""The dependency rule of docs/architecture.md, read from every module's imports (ast).

Layers, innermost first: ``core`` < ``cache`` < ``onnx`` and ``data`` < ``ort`` < ``trt`` and
``report`` < ``cli``. A module imports modules of its own package and of lower layers only (two
layers of the same rank know nothing of each other), never the package root ``trtcal`` (it
re-exports the library: ``trtcal._version`` is the one root module open to all). Each layer has
the third-party packages it may import; some only inside functions (lazily), so ``import
trtcal`` and ``trtcal --help`` work with just numpy, onnx and onnxruntime installed.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "trtcal"

#: Rank of each layer: a module may import layers of strictly lower rank (and its own).
RANK = {"core": 0, "cache": 1, "onnx": 2, "data": 2, "ort": 3, "trt": 4, "report": 4, "cli": 5}

#: Third-party packages each layer may import at module level, and those it may import only
#: inside functions. The standard library is open to all.
TOP_LEVEL = {
    "core": {"numpy"},
    "cache": {"numpy"},
    "onnx": {"numpy"},
    "data": {"numpy"},
    "ort": {"numpy"},
    "trt": {"numpy"},
    "report": set(),
    "cli": {"numpy"},
}
LAZY = {
    "core": set(),
    "cache": {"yaml", "flatbuffers"},  # overrides files, ONNX Runtime's flatbuffers tables
    "onnx": {"onnx", "onnxruntime"},  # onnxruntime: checking that a written model runs
    "data": {"PIL"},
    "ort": {"onnx", "onnxruntime"},
    "trt": {"onnx", "tensorrt", "tensorrt_rtx", "pycuda", "cuda", "torch"},
    "report": {"numpy", "matplotlib", "PIL"},  # PIL: matplotlib's own dependency (palette PNGs)
    "cli": {"onnx", "onnxruntime", "matplotlib", "tensorrt", "PIL", "yaml"},
}
#: The one module allowed a dependency outside its layer's lists, and why.
EXCEPTIONS = {"trtcal.core._histogram_kernels": {"numba"}}  # the optional compiled kernels; loaded lazily by histogram
#: Heavy packages that ``import trtcal`` and every layer module must not load.
HEAVY = ("onnxruntime", "tensorrt", "tensorrt_rtx", "matplotlib", "pycuda", "numba", "torch")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, bool, int]]:
    """(imported module, at module level?, line) for every import in ``tree``."""
    found = []
    top_nodes = set()  # module level: statements outside functions and classes (if/try blocks included)
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            top_nodes.update(id(inner) for inner in ast.walk(node))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module
                base = module.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names = [f"trtcal.{a.name}" for a in node.names] if prefix == "trtcal" else [prefix]
        else:
            continue
        found += [(n, id(node) in top_nodes, node.lineno) for n in names]
    return found


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def violations(module: str, source: str, is_package: bool = False) -> list[str]:
    """What ``module`` (dotted name) imports against the rule, one line each."""
    layer = layer_of(module)
    if layer is None:
        return []  # the root modules: trtcal/__init__ (the API), __main__, _version
    out = []
    for name, top, line in imports(ast.parse(source), module, is_package):
        where = f"{module}:{line} imports {name}"
        if name == "__future__" or name.split(".")[0] in sys.stdlib_module_names:
            continue
        if name.split(".")[0] == "trtcal":
            if name in ("trtcal._version",):
                continue
            target = layer_of(name)
            if target is None:
                out.append(f"{where}: the package root (import from the layer that defines it)")
            elif target != layer and RANK[target] >= RANK[layer]:
                out.append(f"{where}: {layer} may not import {target} (rank {RANK[target]} >= {RANK[layer]})")
            continue
        root = name.split(".")[0]
        if root in EXCEPTIONS.get(module, ()):
            continue
        if top and root in TOP_LEVEL[layer]:
            continue
        if not top and (root in TOP_LEVEL[layer] or root in LAZY[layer]):
            continue
        if top and root in LAZY[layer]:
            out.append(f"{where} at module level: {layer} imports {root} only inside functions")
        else:
            out.append(f"{where}: {layer} does not depend on {root}")
    return out


def all_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "examples" not in p.parts)


def test_every_module_follows_the_dependency_rule():
    found = []
    for path in all_modules():
        found += violations(module_name(path), path.read_text(), path.name == "__init__.py")
    assert not found, "\n".join(found)


def test_every_module_lives_in_a_layer():
    loose = [module_name(p) for p in all_modules() if layer_of(module_name(p)) is None]
    assert sorted(loose) == ["trtcal", "trtcal.__main__", "trtcal._version"]


@pytest.mark.parametrize(("module", "source", "expected"), [
    ("trtcal.core.histogram", "import onnx\n", "core does not depend on onnx"),
    ("trtcal.core.histogram", "def f():\n    import onnxruntime\n", "core does not depend on onnxruntime"),
    ("trtcal.core.thresholds", "from trtcal.cache import read\n", "core may not import cache"),
    ("trtcal.cache.format", "from trtcal.onnx.model import load_model\n", "cache may not import onnx"),
    ("trtcal.onnx.qdq", "from trtcal.data.sources import open_data\n", "onnx may not import data"),
    ("trtcal.data.sources", "from trtcal.ort.runner import Runner\n", "data may not import ort"),
    ("trtcal.ort.runner", "def f():\n    from trtcal.trt import builder\n", "ort may not import trt"),
    ("trtcal.trt.builder", "from trtcal.report import page\n", "trt may not import report"),
    ("trtcal.report.page", "from trtcal.cli import common\n", "report may not import cli"),
    ("trtcal.ort.eq", "from trtcal import calibrate\n", "the package root"),
    ("trtcal.trt.builder", "import tensorrt\n", "at module level: trt imports tensorrt only inside functions"),
    ("trtcal.report.plots", "import matplotlib.pyplot as plt\n", "at module level: report imports matplotlib"),
    ("trtcal.cache.overrides", "import yaml\n", "at module level: cache imports yaml"),
    ("trtcal.core.metrics", "import numba\n", "core does not depend on numba"),
    ("trtcal.ort.evaluate", "from ..trt import builder\n", "ort may not import trt"),
])
def test_the_rule_catches_each_kind_of_violation(module, source, expected):
    found = violations(module, source)
    assert len(found) == 1 and expected in found[0], found


@pytest.mark.parametrize(("module", "source"), [
    ("trtcal.core.histogram", "import numpy as np\nfrom trtcal.core.errors import TrtcalError\n"),
    ("trtcal.cache.provenance", "from trtcal._version import __version__\nimport json\n"),
    ("trtcal.ort.runner", "import numpy\nfrom trtcal.onnx.model import load_model\nfrom trtcal.data import open_data\n"
                          "def f():\n    import onnxruntime\n"),
    ("trtcal.trt.builder", "def f():\n    import tensorrt\n"),
    ("trtcal.cli.main", "from trtcal.trt.builder import build\nimport numpy\n"),
    ("trtcal.core._histogram_kernels", "import numba\n"),
])
def test_what_the_rule_allows(module, source):
    assert violations(module, source) == []


def test_importing_every_module_loads_no_heavy_dependency():
    """Run in a fresh interpreter: every library module imports with none of the optional heavy
    packages loaded (they are imported inside the functions that need them)."""
    names = [module_name(p) for p in all_modules() if module_name(p) not in ("trtcal.__main__",)
             and module_name(p) != "trtcal.core._histogram_kernels"]
    code = ("import importlib, sys\n"
            f"for n in {names!r}: importlib.import_module(n)\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
