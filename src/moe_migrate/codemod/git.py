"""What git knows about the files a run would write: the dirty-tree guard, as ``cargo fix`` has it.

Rewriting a file in place is safe to undo only when git holds its last state, so by default
moe-migrate does not write into a file with uncommitted changes (modified, staged, or not
tracked at all). Outside a git work tree, or where git is not installed, there is nothing to
check. Where git is there but ``git status`` fails, the guard fails closed.
"""

from __future__ import annotations

import os
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Sequence


class GitError(Exception):
    """``git status`` failed inside a work tree, so it cannot be told what is committed."""


def _git(args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[bytes] | None:
    try:
        return subprocess.run(["git", "--literal-pathspecs", *args], cwd=cwd, capture_output=True, check=False)
    except OSError:
        return None


@lru_cache(maxsize=None)
def toplevel(path: Path) -> Path | None:
    """The root of the git work tree holding ``path`` (a file or directory), or ``None``."""
    directory = path if path.is_dir() else path.parent
    result = _git(["rev-parse", "--show-toplevel"], directory)
    if result is None or result.returncode != 0:
        return None
    return Path(os.fsdecode(result.stdout.rstrip(b"\n")))


def _state(code: bytes) -> str:
    if code == b"??":
        return "untracked"
    if code[1:2] == b" ":
        return "staged"
    return "modified"


def _status(top: Path, files: Sequence[Path]) -> dict[Path, str]:
    names = [os.path.relpath(f, top) for f in files]
    states: dict[Path, str] = {}
    for start in range(0, len(names), 500):
        batch = names[start : start + 500]
        result = _git(["status", "--porcelain=v1", "-z", "--untracked-files=all", "--", *batch], top)
        if result is None or result.returncode != 0:
            detail = result.stderr.decode("utf-8", "replace").strip() if result else "git not found"
            raise GitError(f"git status failed in {top}: {detail}")
        fields = iter(result.stdout.split(b"\0"))
        for entry in fields:
            if not entry:
                continue
            code, name = entry[:2], entry[3:]
            if b"R" in code or b"C" in code:
                next(fields, None)  # a rename's or copy's old name follows; it is not written
            states[Path(os.path.realpath(top / os.fsdecode(name)))] = _state(code)
    return states


def uncommitted(files: Sequence[Path]) -> list[tuple[Path, str]]:
    """The ``files`` whose content git does not hold, with ``modified``/``staged``/``untracked``.

    Files outside any git work tree are never reported. Raises :class:`GitError` when git
    cannot say.
    """
    by_top: dict[Path, list[Path]] = {}
    for file in files:
        real = Path(os.path.realpath(file))
        top = toplevel(real.parent)
        if top is not None:
            by_top.setdefault(top, []).append(real)
    found: list[tuple[Path, str]] = []
    for top, members in by_top.items():
        states = _status(top, members)
        found += [(file, states[file]) for file in members if file in states]
    return sorted(found)
