"""The README's Python example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs():
    text = README.read_text()
    section = text.split("## Use it from Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert tuple(namespace["maps"].shape) == (1, 224, 224)
    assert namespace["result"].probs[0].argmax().item() == 967


def test_readme_commands_match_ci():
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    assert ".venv/bin/python -m pytest" in text and ".venv/bin/python -m pytest" in ci
    assert "pip install -r requirements-dev.txt" in text and "requirements-dev.txt" in ci
    assert ".venv/bin/streamlit run dashboard.py" in text
