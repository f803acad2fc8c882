"""The catalog, the modules and the docs stay in step."""

from __future__ import annotations

import pkgutil

import pytest

import moe_migrate.rules as package
from moe_migrate import rules
from moe_migrate.codemod.discover import mentions
from moe_migrate.codemod.rule import Flagged, Rewrite, Unchanged
from moe_migrate.codemod.testing import explain_text


def test_every_rule_module_is_in_the_catalog() -> None:
    modules = {m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_")}
    assert modules == {rule_id.replace("-", "_") for rule_id in rules.RULE_IDS}


@pytest.mark.parametrize("rule_id", rules.RULE_IDS)
def test_rule_is_documented_and_exemplified(rule_id: str) -> None:
    rule = rules.load(rule_id)
    assert rule.ID == rule_id
    doc = rule.__doc__ or ""
    assert "Why:" in doc and "Fix safety:" in doc
    kinds = {type(e) for e in rule.EXAMPLES}
    assert kinds & {Rewrite, Flagged}, "a rule needs an example of what it does"
    assert Unchanged in kinds, "a rule needs a look-alike it leaves alone"
    assert rule_id in explain_text(rule)


@pytest.mark.parametrize("rule_id", rules.RULE_IDS)
def test_partners_are_in_the_catalog(rule_id: str) -> None:
    for partner in rules.spec(rule_id).requires:
        assert partner in rules.RULE_IDS


def test_select_runs_partners_and_ignore_drops_them() -> None:
    chosen, warnings = rules.select(["shared-fused-moe-import"], [])
    assert chosen == ["shared-fused-moe-import", "shared-fused-moe-reference"]
    assert warnings == []
    chosen, warnings = rules.select([], ["shared-fused-moe-reference"])
    assert "shared-fused-moe-import" not in chosen and "shared-fused-moe-reference" not in chosen
    assert warnings and "shared-fused-moe-import" in warnings[0]


def test_unknown_rule_names_the_known_ones() -> None:
    with pytest.raises(rules.UnknownRule, match="shared-fused-moe-import"):
        rules.select(["no-such-rule"], [])


@pytest.mark.parametrize("rule_id", rules.RULE_IDS)
def test_every_example_a_rule_acts_on_holds_one_of_its_triggers(rule_id: str) -> None:
    # The prefilter parses only files that hold a trigger: a rule must never act without one.
    triggers = rules.spec(rule_id).triggers
    for example in rules.load(rule_id).EXAMPLES:
        if isinstance(example, (Rewrite, Flagged)):
            source = example.before if isinstance(example, Rewrite) else example.source
            assert mentions(source.encode(), triggers), source


def test_a_trigger_group_holds_only_where_all_its_strings_do() -> None:
    triggers = (b"SharedFusedMoE", (b"FusedMoE(", b"shared_experts="))
    assert mentions(b"x = FusedMoE(shared_experts=mlp)", triggers)
    assert mentions(b"from m import SharedFusedMoE", triggers)
    assert not mentions(b"x = FusedMoE(num_experts=8)", triggers)
    assert not mentions(b"mlp = MLP(shared_experts=2)", triggers)
