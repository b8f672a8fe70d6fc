"""Our README.md: every Python block runs as written, and what it promises is documented.

Each Python block is written to a file and run with this interpreter in a fresh process (a block
may call ``asyncio.run`` at top level, as the Quick start does); it must exit 0.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support.doc_samples import CodeBlock, code_blocks

from avtomatika.config import Config

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
PYTHON_BLOCKS = code_blocks(README)


def test_readme_has_python_samples() -> None:
    assert PYTHON_BLOCKS, "README.md lost its Python samples"


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[block.name for block in PYTHON_BLOCKS])
def test_python_block_runs_as_written(block: CodeBlock, tmp_path: Path) -> None:
    script = tmp_path / f"readme_line_{block.line}.py"
    script.write_text(block.code, encoding="utf-8")
    # A sample's Config() reads the environment: keep the runner's own settings out of it.
    env = {k: v for k, v in os.environ.items() if k not in Config.documented_settings()}
    env["PYTHONUNBUFFERED"] = "1"
    try:
        done = subprocess.run(
            [sys.executable, script.name],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=45,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{block.name}: still running after {exc.timeout}s\n--- stderr ---\n{exc.stderr}")
    assert done.returncode == 0, (
        f"{block.name} (README.md line {block.line} is the script's line 1) exited {done.returncode}\n"
        f"--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
    )


@pytest.mark.parametrize("command", ["./scripts/demo", "./scripts/test"])
def test_readme_names_the_two_commands(command: str) -> None:
    assert command in README.read_text(encoding="utf-8")
    assert (REPO / command).is_file(), f"README.md names {command}, which does not exist"


def test_every_setting_is_documented() -> None:
    text = README.read_text(encoding="utf-8")
    undocumented = [name for name in Config.documented_settings() if not re.search(rf"\b{name}\b", text)]
    assert undocumented == [], f"settings missing from README.md: {', '.join(undocumented)}"
