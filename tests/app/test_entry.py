"""dashboard.py sets OMP_WAIT_POLICY before anything can load torch (and with it OpenMP)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_openmp_wait_policy_is_set_before_any_import_that_could_load_torch():
    tree = ast.parse((REPO / "dashboard.py").read_text())
    setting = next(i for i, node in enumerate(tree.body) if "OMP_WAIT_POLICY" in ast.unparse(node))
    imports_before = [ast.unparse(n) for n in tree.body[:setting] if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert imports_before == ["from __future__ import annotations", "import os"], imports_before


def test_the_setting_reaches_openmp_and_an_explicit_choice_wins():
    # The entry's lines up to the setting, then torch, in a fresh interpreter: what OpenMP would read.
    head = (REPO / "dashboard.py").read_text().split("import numpy as np")[0]
    code = head + "\nimport torch\nprint(os.environ['OMP_WAIT_POLICY'])\n"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "PASSIVE", out.stderr
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ACTIVE", out.stderr
