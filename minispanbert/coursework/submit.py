"""The student side: ``python -m minispanbert.coursework submit`` (run in the student copy) checks
the assignment's files and writes ``submission-<id>.zip`` to upload to Gradescope.

It refuses (one ``error:`` line) a copy without ``coursework.json``, a missing file, or a file that
does not parse; it warns about functions that are still stubs and about forbidden imports, which
the autograder would score 0. The zip holds the listed source files and the assignment's notebooks
at their project paths.
"""
from __future__ import annotations

import ast
import json
import zipfile
from pathlib import Path

from minispanbert.coursework.grade import forbidden_imports
from minispanbert.engine.runs.atomic import atomic_path, check_output_file


def _still_stubs(source: str, functions: dict[str, str], module_functions: list[str]) -> list[str]:
    """Names of listed functions whose body still raises their stub's NotImplementedError."""
    stubs = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name in module_functions:
            message = next((m for name, m in functions.items() if name.endswith(":" + node.name)), None)
            body = node.body[1:] if ast.get_docstring(node) is not None else node.body
            if (len(body) == 1 and isinstance(body[0], ast.Raise) and message is not None
                    and message in ast.unparse(body[0])):
                stubs.append(node.name)
    return stubs


def submit(root=".", out=None) -> tuple[Path, list[str]]:
    """Check the student copy at ``root`` and write the zip -> (zip path, warnings)."""
    root = Path(root)
    manifest_path = root / "coursework.json"
    if not manifest_path.is_file():
        raise ValueError(f"{root.resolve()} has no coursework.json: run submit in the folder of your assignment copy")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{manifest_path} is damaged ({exc}): restore it from your assignment copy") from None
    warnings = []
    for rel in manifest["files"]:
        path = root / rel
        if not path.is_file():
            raise ValueError(f"{rel} is missing: restore it from your assignment copy and resubmit")
        source = path.read_text(encoding="utf-8")
        try:
            ast.parse(source, filename=rel)
        except SyntaxError as exc:
            raise ValueError(f"{rel} line {exc.lineno}: syntax error ({exc.msg}); fix it before submitting") from None
        module = rel[:-3].replace("/", ".")
        listed = [name.split(":")[1] for name in manifest["functions"] if name.startswith(module + ":")]
        for name in _still_stubs(source, manifest["functions"], listed):
            warnings.append(f"{rel}: {name} is still the stub (its tests will score 0)")
        for bad in forbidden_imports(source.encode()):
            warnings.append(f"{rel} imports {bad}: the autograder scores every test of this file 0; remove it")
    out = check_output_file(Path(out) if out else root / f"submission-{manifest['assignment']}.zip")
    members = list(manifest["files"]) + [nb for nb in manifest.get("notebooks", []) if (root / nb).is_file()]
    with atomic_path(out) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for rel in members:
                archive.write(root / rel, rel)
    return out, warnings
