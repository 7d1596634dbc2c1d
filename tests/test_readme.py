"""The README's library example runs as written, and writes only what it was asked to, where git ignores it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import SHARED_NAMES

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(section: str) -> str:
    """The first ```python block under the README heading `section`."""
    text = README.read_text(encoding="utf-8").split(f"## {section}\n", 1)[1]
    return re.search(r"```python\n(.*?)```", text, re.DOTALL).group(1)


@pytest.mark.slow
def test_the_notebook_example_runs_as_written_and_writes_only_its_bundle(tmp_path):
    code = readme_block("Use the library from a notebook")
    root = tmp_path / "repo"  # the example runs from the repository root, beside ../shared
    (root / "data").mkdir(parents=True)  # a checkout has it (data/.gitkeep)
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "names").symlink_to(SHARED_NAMES, target_is_directory=True)
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(README.parent), "MPLBACKEND": "svg"})
    assert done.returncode == 0, done.stderr[-3000:]
    accuracy, macro_f1 = map(float, done.stdout.splitlines()[0].split())
    assert accuracy > 0.7 and macro_f1 > 0.4  # two epochs of an LSTM beside the n-gram models
    assert done.stdout.splitlines()[1] == "['German', 'Japanese', 'Irish']"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == ["data", "data/lstm.pt"]
    ignored = subprocess.run(["git", "check-ignore", "-q", "data/lstm.pt"], cwd=README.parent, timeout=60)
    assert ignored.returncode == 0, "the example's bundle would show in git status"
