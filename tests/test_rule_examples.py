"""Every rule's EXAMPLES, run as tests (they are also its --explain text)."""

from __future__ import annotations

import pytest

from moe_migrate import rules
from moe_migrate.codemod.rule import Flagged, Rewrite, Unchanged
from moe_migrate.codemod.testing import assert_example


def _cases():
    for rule_id in rules.RULE_IDS:
        counts = {"rewrite": 0, "flagged": 0, "unchanged": 0}
        for example in rules.load(rule_id).EXAMPLES:
            kind = {Rewrite: "rewrite", Flagged: "flagged", Unchanged: "unchanged"}[type(example)]
            counts[kind] += 1
            note = getattr(example, "note", "") or ""
            yield pytest.param(rule_id, example, id=f"{rule_id}[{kind}-{counts[kind]}:{note}]")


@pytest.mark.parametrize(("rule_id", "example"), list(_cases()))
def test_example(rule_id: str, example) -> None:
    selected, _ = rules.select([rule_id], [])
    assert_example([rules.load(r) for r in selected], example, rule_id)
