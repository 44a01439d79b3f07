"""The pure-maths modules import neither Ray nor FAISS (STYLE.md rule 1)."""
from __future__ import annotations

import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORE = os.path.join(ROOT, "study", "core")
FORBIDDEN = {"ray", "faiss"}


def test_no_import_statement_names_ray_or_faiss():
    for name in sorted(os.listdir(CORE)):
        if not name.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(CORE, name)).read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not roots & FORBIDDEN, f"study/core/{name} imports {roots & FORBIDDEN}"


def test_importing_core_loads_neither_ray_nor_faiss():
    modules = [f"study.core.{n[:-3]}" for n in os.listdir(CORE) if n.endswith(".py") and n != "__init__.py"]
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + (
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'ray', 'faiss'})\nprint(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
