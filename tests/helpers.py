"""Small helpers shared by the CLI and tree tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


SMOKE_FLAGS = ("--smoke", "--no-smoke", "--smoke-only")


def moe_migrate(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run the real entry point (``python -m moe_migrate``) and capture both streams.

    The smoke test is off unless a test asks for it (it has tests of its own, and costs
    seconds per run under Triton's interpreter).
    """
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    smoke = () if any(a in SMOKE_FLAGS for a in args) or "--version" in args else ("--no-smoke",)
    return subprocess.run(
        [sys.executable, "-m", "moe_migrate", *smoke, *args],
        cwd=cwd,
        capture_output=True,
        env=full_env,
        check=False,
    )


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (POSIX relative path -> bytes), caches left out."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }
