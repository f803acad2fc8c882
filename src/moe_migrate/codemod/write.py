"""Putting a Plan on disk: atomic, only where bytes change, never over a file that moved on.

Each file is written to a temporary file in its own directory, flushed to disk, given the
original's mode, then renamed over the original: a reader (or a crash) sees either the old
bytes or the new ones, never a mix.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from moe_migrate.codemod.outcomes import Changed, Created, Deleted, Failed, FileOutcome


def write_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` atomically, keeping ``mode``."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".moe-migrate")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise


def apply_outcome(outcome: FileOutcome, root: Path) -> FileOutcome:
    """Carry out one edit; return the outcome, or ``Failed(stage="write")`` saying why not."""
    path = root / outcome.path
    try:
        if isinstance(outcome, Created):
            if path.exists():
                return Failed(outcome.path, "write", "not created: the file already exists")
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, outcome.after)
            return outcome
        if not isinstance(outcome, (Changed, Deleted)):
            return outcome
        if path.read_bytes() != outcome.before:
            return Failed(
                outcome.path,
                "write",
                "not written: the file changed on disk while it was being migrated; run again",
            )
        if isinstance(outcome, Deleted):
            path.unlink()
        else:
            write_atomic(path, outcome.after, path.stat().st_mode & 0o7777)
        return outcome
    except OSError as error:
        return Failed(outcome.path, "write", f"not written: {error.strerror or error}")
