"""migrate_source and build_plan, without the CLI."""

from __future__ import annotations

import libcst as cst
import pytest

from moe_migrate.codemod.context import FileContext
from moe_migrate.codemod.outcomes import Changed, Failed, Unchanged
from moe_migrate.codemod.rule import Rule
from moe_migrate.codemod.run import build_plan
from moe_migrate.codemod.testing import run
from moe_migrate.codemod.transform import migrate_source

IMPORT = b"from vllm.model_executor.layers.fused_moe import SharedFusedMoE\n"


class Crashes(Rule):
    """A rule that crashes. Why: tests. Fix safety: none."""

    ID = "crashes"

    def visit_Name(self, node: cst.Name) -> None:
        raise RuntimeError("boom")


def test_parse_error_is_a_failed_outcome(all_rules) -> None:
    outcome = run(all_rules, b"print 'python 2'\nSharedFusedMoE\n")
    assert isinstance(outcome, Failed) and outcome.stage == "parse"
    assert "syntax error at line 1" in outcome.message


def test_rule_crash_is_a_failed_outcome_not_an_exception() -> None:
    outcome = migrate_source(b"x = 1\n", [Crashes], FileContext("a.py"))
    assert isinstance(outcome, Failed) and outcome.stage == "rule"
    assert "boom" in outcome.message and "RuntimeError" in (outcome.traceback or "")


@pytest.mark.parametrize(
    "source",
    [b"\xff\xfe not utf-8 SharedFusedMoE\n", b"# -*- coding: klingon -*-\nSharedFusedMoE\n"],
    ids=["undecodable", "unknown-coding"],
)
def test_undecodable_is_a_failed_outcome(source: bytes, all_rules) -> None:
    outcome = run(all_rules, source)
    assert isinstance(outcome, Failed) and outcome.stage == "parse"


def test_nothing_to_do_is_unchanged(all_rules) -> None:
    assert isinstance(run(all_rules, b"x = 1\n"), Unchanged)


def test_renames_leave_the_package_to_the_removal(all_rules) -> None:
    from moe_migrate import rules

    renames = [rules.load("shared-fused-moe-import"), rules.load("shared-fused-moe-reference")]
    context = FileContext(
        "vllm/model_executor/layers/fused_moe/__init__.py",
        "vllm.model_executor.layers.fused_moe",
        True,
    )
    source = b"from .shared_fused_moe import SharedFusedMoE\n__all__ = ['SharedFusedMoE']\n"
    assert isinstance(migrate_source(source, renames, context), Unchanged)
    removal = migrate_source(source, all_rules, context)
    assert isinstance(removal, Changed) and removal.rules == ("vllm-remove-shared-fused-moe",)
    assert removal.after == b"__all__ = []\n"


def test_fresh_rule_instance_per_file(all_rules) -> None:
    first = run(all_rules, IMPORT + b"a = SharedFusedMoE\n")
    second = run(all_rules, b"class SharedFusedMoE: ...\n# SharedFusedMoE here is ours\n")
    assert isinstance(first, Changed) and isinstance(second, Unchanged)


def test_local_fused_moe_is_not_shadowed(all_rules) -> None:
    source = IMPORT + b"from my_plugin import FusedMoE\nx = SharedFusedMoE(); y = FusedMoE()\n"
    outcome = run(all_rules, source)
    assert isinstance(outcome, Changed)
    assert outcome.after == (
        b"from vllm.model_executor.layers.fused_moe import FusedMoE as VllmFusedMoE\n"
        b"from my_plugin import FusedMoE\nx = VllmFusedMoE(); y = FusedMoE()\n"
    )


def test_relative_import_in_a_vllm_tree(all_rules) -> None:
    context = FileContext("vllm/model_executor/models/m.py", "vllm.model_executor.models.m")
    source = b"from ..layers.fused_moe.shared_fused_moe import SharedFusedMoE\nx = SharedFusedMoE\n"
    outcome = migrate_source(source, all_rules, context)
    assert isinstance(outcome, Changed)
    assert outcome.after == b"from ..layers.fused_moe import FusedMoE\nx = FusedMoE\n"


def test_type_checking_block_that_only_held_the_import_goes(all_rules) -> None:
    source = (
        b"from typing import TYPE_CHECKING\n"
        b"from vllm.model_executor.layers.fused_moe import FusedMoE\n"
        b"if TYPE_CHECKING:\n"
        b"    from vllm.model_executor.layers.fused_moe import SharedFusedMoE\n"
        b"x: 'SharedFusedMoE'\n"
    )
    outcome = run(all_rules, source)
    assert isinstance(outcome, Changed)
    assert outcome.after == (
        b"from typing import TYPE_CHECKING\n"
        b"from vllm.model_executor.layers.fused_moe import FusedMoE\n"
        b"x: 'FusedMoE'\n"
    )


def test_build_plan_prefilters_and_sorts(tmp_path) -> None:
    for name in ("b.py", "a.py", "c.py"):
        (tmp_path / name).write_bytes(IMPORT + b"x = SharedFusedMoE\n")
    (tmp_path / "untouched.py").write_bytes(b"x = 1\n")
    plan = build_plan([tmp_path], ["shared-fused-moe-import", "shared-fused-moe-reference"], jobs=1)
    assert [o.path for o in plan.outcomes] == ["a.py", "b.py", "c.py"]
    assert plan.scanned == 4


def test_prefilter_off_gives_the_same_plan(tmp_path) -> None:
    from conftest import FIXTURES

    ids = ["shared-fused-moe-import", "shared-fused-moe-reference"]
    fast = build_plan([FIXTURES / "vllm-mini"], ids, jobs=1)
    full = build_plan([FIXTURES / "vllm-mini"], ids, jobs=1, prefilter=False)
    assert fast.edits == full.edits
    assert fast.findings == full.findings


def test_a_removed_block_keeps_the_comments_after_its_last_line(all_rules) -> None:
    # LibCST gives the lines after a block's last statement, up to the last one indented like
    # the block, to the block: removing the emptied `if` must not take the comments with it.
    source = (
        b"from typing import TYPE_CHECKING\n"
        b"from vllm.model_executor.layers.fused_moe import FusedMoE, SharedFusedMoE\n"
        b"if TYPE_CHECKING:\n"
        b"    from vllm.model_executor.layers.fused_moe import SharedFusedMoE\n"
        b"    # the block's last comment\n"
        b"\n"
        b"# a comment after the block\n"
        b"    \n"
        b"x = 1\n"
    )
    outcome = migrate_source(source, all_rules, FileContext("m.py", "m"))
    assert isinstance(outcome, Changed)
    assert outcome.after == (
        b"from typing import TYPE_CHECKING\n"
        b"from vllm.model_executor.layers.fused_moe import FusedMoE\n"
        b"    # the block's last comment\n"
        b"\n"
        b"# a comment after the block\n"
        b"    \n"
        b"x = 1\n"
    )


def test_the_collector_is_held_off_per_file_and_restored(tmp_path) -> None:
    import gc

    (tmp_path / "a.py").write_bytes(IMPORT + b"x = SharedFusedMoE\n")
    assert gc.isenabled()
    plan = build_plan([tmp_path], ["shared-fused-moe-import", "shared-fused-moe-reference"], jobs=1)
    assert [o.status for o in plan.outcomes] == ["changed"]
    assert gc.isenabled()


class _Mixin:
    def visit_Name(self, node: cst.Name) -> None:
        pass


class _Probe(_Mixin, Rule):
    """A rule that defines two methods itself and inherits one. Why: tests. Fix safety: none."""

    ID = "probe"

    def visit_Call(self, node: cst.Call) -> None:
        pass

    def leave_Call(self, original_node: cst.Call) -> None:
        pass


def test_a_rule_hands_the_traversal_only_the_methods_it_defines(all_rules) -> None:
    assert set(_Probe(None).get_visitors()) == {"visit_Call", "leave_Call", "visit_Name"}  # type: ignore[arg-type]
    # The same as LibCST's own definition less its do-nothing stubs, for every bundled rule.
    stubs = cst.BatchableCSTVisitor
    for rule in all_rules:
        expected = {
            name
            for name in dir(rule)
            if name.startswith(("visit_", "leave_")) and getattr(rule, name) is not getattr(stubs, name, None)
        }
        assert set(rule(None).get_visitors()) == expected, rule.ID
