"""The import rules of docs/architecture.md, checked on every module's imports (those inside
functions too), and the runtime path measured in a fresh process."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "lens"
BASE = {"errors", "hooks", "interrupts", "settings", "methods", "version", "sampling", "interventions"}
# module (or package) -> the lens modules it may import
ALLOWED = {
    "errors": set(), "hooks": set(), "interrupts": set(), "version": set(), "methods": {"errors"},
    "interventions": {"errors"},
    "settings": {"errors", "methods", "sampling"},
    "swap": set(), "store": {"errors", "swap", "files"}, "files": {"errors"},
    "persist": {"errors", "files", "version"},
    "tokens": {"errors"}, "sampling": {"errors"},
    "chat": {"errors"},
    "runtime": BASE | {"store", "tokens", "sampling", "chat"},
    "families": BASE,
    "export": BASE | {"store", "swap", "families", "runtime", "export"},
    "grad": BASE | {"store", "families", "grad"},
    "analysis": BASE | {"store", "families", "analysis"},
    "explanation": BASE | {"analysis", "viz", "persist"},
    "pipeline": BASE | {"runtime", "grad", "analysis", "explanation"},
    "viz": BASE | {"analysis", "viz", "files"},
    "corpus": BASE | {"files", "runtime", "pipeline", "analysis", "viz", "corpus"},
    "testing": BASE | {"export"},
}
# third-party libraries a module must not import (the heavy ones belong to other layers)
FORBIDDEN = {
    "runtime": {"jax", "sklearn", "bokeh", "torch", "transformers", "optimum", "ray", "pyarrow"},
    "store": {"jax", "sklearn", "bokeh", "torch", "onnxruntime"},
    "families": {"sklearn", "bokeh", "torch", "onnxruntime", "transformers"},
    "grad": {"sklearn", "bokeh", "torch", "onnxruntime", "transformers"},
    "analysis": {"bokeh", "torch", "onnxruntime", "transformers"},
    "viz": {"jax", "torch", "onnxruntime", "transformers"},
    "pipeline": {"torch", "transformers", "optimum", "ray"},
    "corpus": {"torch", "transformers", "optimum"},
}


def _drawn_layers() -> list[set[str]]:
    """The layers drawn in docs/architecture.md, bottom first: each line of its diagram names the
    modules of one layer (after a 12-column label, before the description)."""
    doc = (ROOT.parent / "docs" / "architecture.md").read_text()
    diagram = doc.split("```")[1].strip("\n").splitlines()
    import re
    return [{m.rstrip("/") for m in re.split(r"\s{3,}", line[12:].strip())[0].split()} for line in reversed(diagram)]


def test_the_rules_are_the_drawn_layers():
    """Every module is drawn in one layer, every rule above is in the drawing, and no allowed import
    goes up a layer."""
    layers = _drawn_layers()
    level = {m: i for i, layer in enumerate(layers) for m in layer}
    assert sum(len(layer) for layer in layers) == len(level), "a module drawn twice"
    top = {"cli", "serve", "__main__"}
    assert set(level) == set(ALLOWED) | top
    assert set(level) >= {_layer(rel) for _, rel in _modules()} - {"lens"}
    for module, allowed in ALLOWED.items():
        for target in allowed:
            assert level[target] <= level[module], f"{module} may import {target}, which is drawn above it"
    assert layers[0] == BASE


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("").parts
        yield path, rel


def _imports(path: Path, rel: tuple) -> set[str]:
    """Fully qualified names of everything the file imports (relative imports resolved)."""
    package = ["lens", *rel[:-1]] if rel[-1] != "__init__" else ["lens", *rel[:-1]]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
                # `from . import x` imports submodule x
                out.update(f"{mod}.{a.name}" if not node.module else mod for a in node.names)
            else:
                out.add(node.module)
    return out


def _layer(rel: tuple) -> str:
    return rel[0] if rel[0] not in ("__init__", "__main__") else "lens"


@pytest.mark.parametrize("path,rel", list(_modules()), ids=lambda v: "/".join(v) if isinstance(v, tuple) else "")
def test_import_rules(path, rel):
    layer = _layer(rel)
    if layer in ("lens", "cli", "serve"):  # the top: may use anything
        return
    assert layer in ALLOWED, f"lens/{'/'.join(rel)}.py belongs to no layer of docs/architecture.md"
    for name in _imports(path, rel):
        parts = name.split(".")
        if parts[0] == "lens":
            target = parts[1] if len(parts) > 1 else "lens"
            assert target == layer or target in ALLOWED[layer], f"{'/'.join(rel)} imports {name}"
        else:
            assert parts[0] not in FORBIDDEN.get(layer, ()), f"{'/'.join(rel)} imports {name}"


def test_the_rules_see_a_violation(tmp_path):
    """The checker itself: a runtime module importing JAX inside a function is caught."""
    bad = tmp_path / "runtime.py"
    bad.write_text("def f():\n    import jax.numpy as jnp\n    from .grad import Attributor\n")
    names = _imports(bad, ("runtime",))
    assert {"jax.numpy", "lens.grad"} <= names


def test_generation_loads_no_heavy_library(tiny):
    """`import lens`, load and generate: neither JAX, scikit-learn, Bokeh nor torch is imported."""
    code = ("import sys, json, lens\n"
            f"m = lens.load({str(tiny[1])!r})\n"
            "m.generate('Hello', 3, trace=True)\n"
            "print(json.dumps(sorted(k for k in ('jax', 'sklearn', 'bokeh', 'torch', 'transformers') if k in sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_explaining_and_the_report_load_no_scikit_learn(tiny, tmp_path):
    """explain and write the report (NMF, k-means, every view): scikit-learn and SciPy, ~1 s to
    import in a fresh process, stay out; they serve PCA and corpus mode only."""
    code = ("import sys, json, lens\n"
            f"e = lens.Explainer.load({str(tiny[1])!r})\n"
            "x = e.explain('Hello there', max_new_tokens=6)\n"
            f"x.report({str(tmp_path / 'r.html')!r})\n"
            "print(json.dumps(sorted(k for k in ('sklearn', 'scipy', 'jax', 'bokeh') if k in sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == ["bokeh", "jax"]
    assert (tmp_path / "r.html").stat().st_size > 100_000
