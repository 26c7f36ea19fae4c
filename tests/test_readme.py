"""Tried as a new user would: the code blocks of the README's "Use" section and of the quick
start, written to the files their first line names, make a project whose pytest run passes
(two tenants' bounce hooks, keys in a JSON file, a test against LocalSegment), with
nothing but what the page shows."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# A fenced Python block whose first line is a comment naming a file: "# myapp/hooks.py".
BLOCK = re.compile(r"^```python\n# ([\w./-]+\.py)\n(.*?)^```$", re.S | re.M)


def files_of(page: Path) -> dict[str, str]:
    """The files a page's code blocks name, with their content (the naming line kept)."""
    return {name: f"# {name}\n{body}" for name, body in BLOCK.findall(page.read_text())}


@pytest.mark.parametrize("page", ["README.md", "docs/quickstart.md"])
def test_the_page_names_the_hooks_module_and_its_test(page: str) -> None:
    assert set(files_of(ROOT / page)) == {"myapp/segment_hooks.py", "tests/test_segment_hooks.py"}


def test_the_readme_and_the_quick_start_show_the_same_code() -> None:
    assert files_of(ROOT / "README.md") == files_of(ROOT / "docs" / "quickstart.md")


@pytest.mark.slow  # a pytest run in a child process: seconds
@pytest.mark.parametrize("page", ["README.md", "docs/quickstart.md"])
def test_the_pages_code_as_files_passes_its_own_test(page: str, tmp_path: Path) -> None:
    for name, content in files_of(ROOT / page).items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "SEGMENT_WRITE_KEY" and not k.startswith(("SELLIGENT_SEGMENT_", "PYTEST_"))
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
