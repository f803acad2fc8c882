"""GitHub Actions workflow commands: one annotation per item, most important first.

GitHub reads ``::error file=...,line=...::message`` lines from a step's stdout and shows at
most 10 errors, 10 warnings and 10 notices per step; the rest are dropped silently. So the
order matters (failures, findings that need a human, then files to rewrite), and when an
annotation would be dropped the first line says so and where to look instead.
"""

from __future__ import annotations

from collections import Counter

from moe_migrate.codemod.report.common import Item, Links, items
from moe_migrate.codemod.run import Plan

#: Annotations of each kind GitHub shows per step.
PER_STEP = 10
_COMMANDS = {"error": "error", "warning": "warning", "note": "notice"}


def escape_data(text: str) -> str:
    """A command's message, as ``@actions/core`` escapes it."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A command's property value: the message escapes, and ``:`` and ``,`` too."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(name: str, message: str, **properties: object) -> str:
    """One workflow command line; properties that are ``None`` are left out."""
    props = ",".join(f"{key}={escape_property(str(value))}" for key, value in properties.items() if value is not None)
    return f"::{name}{' ' + props if props else ''}::{escape_data(message)}"


def annotation(item: Item, links: Links = Links()) -> str:
    # GitHub rejects col/endColumn on an annotation that spans several lines.
    one_line = item.line == item.end_line
    return command(
        _COMMANDS[item.level],
        item.message,
        title=item.title,
        file=links.path(item.path),
        line=item.line,
        endLine=item.end_line,
        col=item.column if one_line else None,
        endColumn=item.end_column if one_line else None,
    )


def render(plan: Plan, mode: str, *, links: Links = Links()) -> str:
    found = items(plan, mode)
    lines = [annotation(item, links) for item in found]
    counts = Counter(_COMMANDS[item.level] for item in found)
    if any(count > PER_STEP for count in counts.values()):
        total = ", ".join(f"{counts[k]} {k}s" for k in ("error", "warning", "notice") if counts[k])
        lines.insert(
            0,
            command(
                "notice",
                f"moe-migrate reported {total}; GitHub shows only the first {PER_STEP} of each "
                "kind per step. The job summary (--report markdown) and the SARIF report list "
                "them all.",
                title="moe-migrate: more annotations than GitHub shows",
            ),
        )
    return "".join(line + "\n" for line in lines)
