"""Dropping items from comma-separated sequences (import names, list and tuple elements).

Each item owns the comma after it, and in a one-item-per-line layout that comma owns the line
break and indentation before the next item. Dropping an item therefore hands its comma's
layout to the item before it, which keeps its own end-of-line comment; comments above a
dropped item go with it.
"""

from __future__ import annotations

from typing import Collection, Sequence, TypeVar

import libcst as cst

Item = TypeVar("Item", cst.ImportAlias, cst.BaseElement)


def _merge(kept: object, removed: object, removed_was_last: bool) -> object:
    kept_ws = getattr(kept, "whitespace_after", None)
    removed_ws = getattr(removed, "whitespace_after", None)
    if isinstance(kept_ws, cst.ParenthesizedWhitespace) and isinstance(
        removed_ws, cst.ParenthesizedWhitespace
    ):
        return kept.with_changes(  # type: ignore[attr-defined]
            whitespace_after=removed_ws.with_changes(first_line=kept_ws.first_line)
        )
    return removed if removed_was_last else kept


def drop_at(items: Sequence[Item], drop: Collection[int]) -> list[Item]:
    """``items`` without the indices in ``drop``, commas and layout kept consistent."""
    survivors: list[Item] = []
    last_kept = max((i for i in range(len(items)) if i not in drop), default=-1)
    for index, item in enumerate(items):
        if index not in drop:
            survivors.append(item)
        elif survivors:
            comma = _merge(survivors[-1].comma, item.comma, index > last_kept)
            survivors[-1] = survivors[-1].with_changes(comma=comma)
    return survivors
