"""The README (and deploy/README.md, docs/batch.md) say what the code does: examples run as written, tables
list what exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DEPLOY = REPO / "deploy" / "README.md"
DOCS = (README, DEPLOY, REPO / "docs" / "batch.md")


def test_readme_python_examples_run():
    text = README.read_text()
    section = text.split("## Use it from Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    namespace: dict = {}
    for code in blocks:  # one after the other, as in a notebook
        exec(compile(code, "README.md", "exec"), namespace)
    assert tuple(namespace["maps"].shape) == (1, 224, 224)
    assert namespace["result"].probs[0].argmax().item() == 967
    smooth, cam = namespace["smooth"], namespace["cam"]
    assert tuple(smooth.maps["score"].shape) == (1, 224, 224) and tuple(smooth.attributions["loss"].shape) == (
        1, 3, 224, 224)
    assert smooth.params["samples"] == 16 and smooth.params["noise"] == 0.15
    assert tuple(cam.attributions["score"].shape) == (1, 1, 224, 224)


def test_readme_commands_match_ci():
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    assert ".venv/bin/python -m pytest" in text and ".venv/bin/python -m pytest" in ci
    assert "pip install -r requirements-dev.txt" in text and "requirements-dev.txt" in ci
    assert ".venv/bin/streamlit run dashboard.py" in text


@pytest.mark.slow
def test_readme_batch_example_runs(tmp_path: Path):
    """The "Try it on the sample photos" commands, run as written in a scratch folder."""
    import os
    import shlex
    import subprocess
    import sys

    from saliency_core.jobs.results import load_results

    section = README.read_text().split("Try it on the sample photos", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).strip()
    commands = block.replace("\\\n", " ").splitlines()  # continuation lines joined, as the shell does
    env = dict(os.environ, PYTHONPATH=str(README.parent))
    for line in commands:
        argv = shlex.split(line)
        assert argv[0] == ".venv/bin/python"
        subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, env=env, check=True, timeout=600,
                       capture_output=True)
    written = load_results(tmp_path / "results" / "samples")
    assert len(written.results) == 24 and len(written.errors) == 1
    three = load_results(tmp_path / "results" / "samples-3-methods")
    assert len(three.results) == 24 and len(three.maps) == 3
    assert all(f"{m}_insertion_auc" in three.results for m in three.maps)


def test_every_sign_in_promise_names_a_test_that_exists():
    """deploy/README.md's table of what sign-in protects: each row names tests, and each named test is defined."""
    section = DEPLOY.read_text().split("What sign-in protects", 1)[1]
    table = section.split("| promise | test |", 1)[1].split("\n\n", 1)[0]
    rows = [line for line in table.splitlines()[2:] if line.startswith("|")]
    assert len(rows) >= 10, rows
    for row in rows:
        promise, tests = [cell.strip() for cell in row.strip("|").split("|")]
        named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", tests)
        assert named, f"no test named for: {promise}"
        for path, name in named:
            source = README.parent / path
            assert source.exists(), path
            assert re.search(rf"^def {name}\(", source.read_text(), re.M), f"{path}::{name} ({promise})"


def passes_text(method) -> str:
    """A method's cost at its defaults as the README's table writes it: "1", "25 + 1 forward", "64 forward"."""
    cost = method.cost()
    if not cost.forward:
        return str(cost.gradient)
    return f"{cost.forward} forward" if not cost.gradient else f"{cost.gradient} + {cost.forward} forward"


def test_the_method_table_lists_every_registered_method_with_its_family_and_cost():
    from saliency_core.methods.registry import ATTRIBUTION_METHODS, by_family

    section = README.read_text().split("## The methods", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| `")]
    table = {row[0].strip("`"): row for row in rows}
    assert list(table) == [name for names in by_family().values() for name in names]  # every method, by family
    for m in map(ATTRIBUTION_METHODS.get, table):
        _, family, paper, passes, _needs = table[m.name]
        assert (family, paper, passes) == (m.family, m.citation, passes_text(m)), m.name


def test_the_readme_stays_short_and_its_local_links_resolve():
    """A newcomer's README: at most 250 lines; every relative link in the three documents names a file that
    exists (the deploy and batch pages were moved out of it)."""
    assert len(README.read_text().splitlines()) <= 250
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" not in target:
                assert (doc.parent / target).exists(), f"{doc.relative_to(REPO)} links to missing {target}"
