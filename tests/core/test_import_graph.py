"""The learning core imports nothing outside itself.

The core is what a student reads (README, "The core"): the top-level modules below and the
``layers``, ``model`` and ``data`` packages. Everything else (family/, finetune/, interop/,
engine/, coursework/ and the thin ``python -m`` entry points) may import the core, never the other
way round. Checked twice: statically, every import statement of every core file (inside functions
too) names a core module or an allowed third-party package; and at run time, importing every core
module in a fresh interpreter loads no other module of the package and none of the engine's
dependencies. The one exception is the command-line hand-over at the bottom of train.py
(``if __name__ == "__main__":``), which runs only as ``python -m minispanbert.train``.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "minispanbert"
CORE_MODULES = ("__init__", "backend", "config", "gradcheck", "keyed_random", "masking", "optim", "train")
CORE_PACKAGES = ("layers", "model", "data")
NOT_CORE_PACKAGES = ("coursework", "engine", "family", "finetune", "interop")
ENTRY_POINTS = ("bench", "check_gradients", "compare_objectives", "evaluate_qa", "export_hf", "fill_mask",
                "finetune_qa", "predict_qa")  # thin `python -m minispanbert.X` files, each a hand-over
ALLOWED_THIRD_PARTY = {"numpy", "scipy", "tokenizers", "cupy", "cupyx"}
NEVER_LOADED = ("numba", "torch", "mpi4py", "threadpoolctl", "safetensors", "matplotlib", "tqdm")
CORE_LINE_BUDGET = 4000
HANDOVER = {"train.py": {"minispanbert.engine.trainer"}}  # imports allowed in the __main__ block only


def core_files() -> list[Path]:
    files = [PACKAGE / f"{name}.py" for name in CORE_MODULES]
    for package in CORE_PACKAGES:
        files += [p for p in sorted((PACKAGE / package).rglob("*.py")) if p.name != "__main__.py"]
    return files


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


CORE_NAMES = {module_name(p) for p in core_files()}


def imported_modules(path: Path):
    """(module, in a __main__ block) for every import statement in the file; relative imports resolved."""
    tree = ast.parse(path.read_text())
    main_blocks = [node for node in tree.body if isinstance(node, ast.If)
                   and ast.unparse(node.test).replace("'", '"') == '__name__ == "__main__"']
    in_main = {id(n) for block in main_blocks for n in ast.walk(block)}
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, id(node) in in_main
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(parent + ([node.module] if node.module else []))
            if base == "__future__":
                continue
            for alias in node.names:  # `from package import module` names a module
                candidate = f"{base}.{alias.name}"
                module = candidate if candidate in CORE_NAMES or _is_package_module(candidate) else base
                yield module, id(node) in in_main


def _is_package_module(name: str) -> bool:
    if not name.startswith("minispanbert."):
        return False
    path = PACKAGE.parent / Path(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def test_every_file_of_the_package_is_core_or_declared_outside_it():
    """A new top-level module must be placed on one side of the line (and the README says which)."""
    outside = [p for name in NOT_CORE_PACKAGES for p in (PACKAGE / name).rglob("*.py")]
    outside += [PACKAGE / f"{name}.py" for name in ENTRY_POINTS] + [PACKAGE / "data" / "__main__.py"]
    assert all(p.exists() for p in outside + core_files())
    every = set(PACKAGE.rglob("*.py"))
    assert every == set(outside) | set(core_files()), sorted(str(p) for p in every ^ (set(outside) | set(core_files())))


@pytest.mark.parametrize("path", core_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_core_file_imports_only_the_core_and_numerical_libraries(path):
    stdlib = set(sys.stdlib_module_names)
    for module, in_main in imported_modules(path):
        top = module.split(".")[0]
        if in_main:
            assert module in HANDOVER.get(path.name, set()), f"{path.name}: {module} in its __main__ block"
        elif top == "minispanbert":
            assert module in CORE_NAMES, f"{path.relative_to(PACKAGE)} imports {module}, which is outside the core"
        else:
            assert top in stdlib or top in ALLOWED_THIRD_PARTY, f"{path.relative_to(PACKAGE)} imports {module}"


def test_importing_the_core_loads_nothing_else():
    code = ("import importlib, sys\n"
            f"for name in {sorted(CORE_NAMES)!r}: importlib.import_module(name)\n"
            "print('\\n'.join(sorted(sys.modules)))\n")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    package = {m for m in loaded if m.split(".")[0] == "minispanbert"}
    assert package == CORE_NAMES, sorted(package - CORE_NAMES)
    assert not [m for m in loaded if m.split(".")[0] in NEVER_LOADED]


def test_the_core_fits_its_budget_and_layers_hold_only_reference_maths():
    lines = sum(len(p.read_text().splitlines()) for p in core_files())
    assert lines <= CORE_LINE_BUDGET, f"the core has {lines} lines, over its budget of {CORE_LINE_BUDGET}"
    for path in (PACKAGE / "layers").glob("*.py"):
        text = path.read_text().lower()
        for word in ("fused", "kernel", "numba", "cuda", "thread", "is_cupy"):
            assert word not in text or path.name == "__init__.py", f"layers/{path.name} mentions {word!r}"
