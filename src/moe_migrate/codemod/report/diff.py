"""Unified diffs of an outcome's bytes, with git-style ``a/`` ``b/`` headers (``git apply``-able)."""

from __future__ import annotations

import difflib

from moe_migrate.codemod.outcomes import Created, Deleted, FileOutcome


def unified_diff(outcome: FileOutcome, context: int = 3) -> bytes:
    """The diff of one edit as bytes (the file's own encoding and newlines); b"" if none."""
    before = getattr(outcome, "before", None)
    after = getattr(outcome, "after", None)
    if before is None or after is None or before == after:
        return b""
    old = b"/dev/null" if isinstance(outcome, Created) else f"a/{outcome.path}".encode()
    new = b"/dev/null" if isinstance(outcome, Deleted) else f"b/{outcome.path}".encode()
    lines = difflib.diff_bytes(
        difflib.unified_diff,
        before.splitlines(keepends=True),
        after.splitlines(keepends=True),
        old,
        new,
        n=context,
    )
    out = bytearray()
    for line in lines:
        out += line
        if not line.endswith((b"\n", b"\r")):
            out += b"\n\\ No newline at end of file\n"
    return bytes(out)


def diff_text(outcome: FileOutcome) -> str | None:
    """The diff as text for JSON-like reports (undecodable bytes replaced), or None."""
    data = unified_diff(outcome)
    return data.decode("utf-8", "replace") if data else None
