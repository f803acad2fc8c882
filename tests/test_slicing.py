"""Slicing (``codemod.slicing``): LibCST parses only the statements the rules look at, and the
outcome is byte for byte the one the whole file gives."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import FIXTURES
from moe_migrate import rules
from moe_migrate.codemod import slicing
from moe_migrate.codemod.context import FileContext
from moe_migrate.codemod.discover import module_name
from moe_migrate.codemod.outcomes import Changed
from moe_migrate.codemod.run import build_plan
from moe_migrate.codemod.transform import migrate_source

ALL = list(rules.RULE_IDS)
FOCUS = rules.focus(ALL)

MODEL = b'''\
"""A model."""
import torch
from vllm.model_executor.layers.fused_moe import SharedFusedMoE

logger = object()


def unrelated():
    return torch.zeros(1)


class MoE(torch.nn.Module):
    """The MoE block."""

    def __init__(self, config):
        super().__init__()
        self.gate = torch.nn.Linear(2, 2)
        self.experts = SharedFusedMoE(num_experts=8, shared_experts=None)

    def helper(self):
        return 1

    def forward(self, hidden_states):
        shared, routed = self.experts(hidden_states)
        return shared + routed


class Decoder:
    def forward(self, x):
        return x
'''


def _rules() -> list[type]:
    return [rules.load(rule_id) for rule_id in ALL]


def _kept(source: bytes) -> list[bytes]:
    part = slicing.plan(source, ast.parse(source), FOCUS)
    assert part is not None
    return [line for line in part.text.splitlines() if line != slicing.MARKER]


def test_keeps_the_imports_the_class_and_the_members_that_use_the_layer() -> None:
    kept = _kept(MODEL)
    text = b"\n".join(kept)
    assert b"import torch" in text and b"import SharedFusedMoE" in text
    assert b"class MoE(torch.nn.Module):" in text
    assert b"self.experts = SharedFusedMoE(" in text
    # `forward` does not name the class: it is kept because it uses `self.experts`.
    assert b"shared, routed = self.experts(hidden_states)" in text
    for gone in (b"logger = object()", b"def unrelated", b"def helper", b"class Decoder"):
        assert gone not in text
    # The shortest member no rule needs stays, so that the body is never emptied by the rules.
    assert b'"""The MoE block."""' in text


def test_lines_map_back_and_a_finding_points_at_the_file() -> None:
    part = slicing.plan(MODEL, ast.parse(MODEL), FOCUS)
    assert part is not None
    file_lines = MODEL.splitlines()
    for number, line in enumerate(part.text.splitlines(), 1):
        if line != slicing.MARKER:
            assert file_lines[part.line(number) - 1] == line
    outcome = migrate_source(MODEL, _rules(), FileContext("model.py"), FOCUS)
    [finding] = outcome.findings
    assert finding.rule == "moe-output-tuple"
    assert file_lines[finding.line - 1].strip() == b"shared, routed = self.experts(hidden_states)"


def test_splice_puts_each_run_back_and_refuses_lost_markers() -> None:
    part = slicing.plan(MODEL, ast.parse(MODEL), FOCUS)
    assert part is not None
    assert part.splice(MODEL, part.text) == MODEL
    edited = part.text.replace(b"SharedFusedMoE", b"FusedMoE")
    assert part.splice(MODEL, edited) == MODEL.replace(b"SharedFusedMoE", b"FusedMoE")
    assert part.splice(MODEL, edited.replace(slicing.MARKER + b"\n", b"", 1)) is None


def test_subclasses_aliases_and_the_bases_they_read_are_kept() -> None:
    source = (
        b"from vllm.model_executor.layers.fused_moe import SharedFusedMoE as SFM\n"
        b"x = 1\n\n\n"
        b"class Base:\n    pass\n\n\n"
        b"class Mixin(Base):\n    pass\n\n\n"
        b"y = 2\n\n\n"
        b"class NPUMoE(Mixin, SFM):\n    pass\n\n\n"
        b"z = 3\n\n\n"
        b"def build():\n    return NPUMoE()\n\n\n"
        b"w = 4\n"
    )
    text = b"\n".join(_kept(source))
    for kept in (b"class Base", b"class Mixin", b"class NPUMoE", b"return NPUMoE()"):
        assert kept in text
    for gone in (b"y = 2", b"z = 3", b"w = 4"):
        assert gone not in text


def test_an_annotation_that_names_the_class_keeps_the_members_that_use_the_holder() -> None:
    # `experts: SharedFusedMoE` says what `self.experts` is: `forward` names neither the class
    # nor a construction, and moe-output-tuple must see it sliced as it does whole.
    source = MODEL.replace(
        b"        self.experts = SharedFusedMoE(num_experts=8, shared_experts=None)\n",
        b"        self.experts = make_experts(config)\n",
    ).replace(b'    """The MoE block."""\n', b'    """The MoE block."""\n\n    experts: SharedFusedMoE\n')
    text = b"\n".join(_kept(source))
    assert b"experts: SharedFusedMoE" in text
    assert b"shared, routed = self.experts(hidden_states)" in text
    assert b"def helper" not in text
    whole = migrate_source(source, _rules(), FileContext("model.py"))
    sliced = migrate_source(source, _rules(), FileContext("model.py"), FOCUS)
    assert sliced == whole
    assert [(f.rule, f.line) for f in whole.findings] == [("moe-output-tuple", 26)]


def test_a_table_row_for_fusedmoe_in_a_statement_of_its_own_is_kept() -> None:
    # `TABLE[FusedMoE] = "A"` names neither the class nor its module: sliced away, the row
    # for SharedFusedMoE would be renamed into a second FusedMoE row without a finding.
    source = MODEL + b'\n\nfrom vllm.model_executor.layers.fused_moe import FusedMoE\n\nTABLE = {}\nTABLE[FusedMoE] = "A"\n\n\ndef register():\n    TABLE[SharedFusedMoE] = "B"\n'
    assert b'TABLE[FusedMoE] = "A"' in b"\n".join(_kept(source))
    whole = migrate_source(source, _rules(), FileContext("model.py"))
    sliced = migrate_source(source, _rules(), FileContext("model.py"), FOCUS)
    assert sliced == whole
    assert ("shared-fused-moe-reference", 40) in [(f.rule, f.line) for f in whole.findings]


def test_a_file_that_needs_most_of_its_lines_is_not_sliced() -> None:
    source = b"from vllm.model_executor.layers.fused_moe import SharedFusedMoE\nx = SharedFusedMoE\n"
    assert slicing.plan(source, ast.parse(source), FOCUS) is None


def test_a_deep_statement_that_names_nothing_no_longer_stops_the_migration() -> None:
    source = (
        b"from vllm.model_executor.layers.fused_moe import SharedFusedMoE\n"
        + b"".join(b"a%d = %d\n" % (i, i) for i in range(20))
        + b"x = " + b"-" * 600 + b"1\n"
        + b"y = SharedFusedMoE\n"
    )
    whole = migrate_source(source, _rules(), FileContext("deep.py"))
    sliced = migrate_source(source, _rules(), FileContext("deep.py"), FOCUS)
    assert whole.status == "failed"  # LibCST's visitors reach the recursion limit
    assert isinstance(sliced, Changed)
    assert sliced.after == source.replace(b"SharedFusedMoE", b"FusedMoE")


def _fixture_files() -> list[tuple[Path, Path]]:
    return [(root, path) for root in sorted(FIXTURES.iterdir()) if root.is_dir() for path in sorted(root.rglob("*.py"))]


def test_every_fixture_gives_the_same_outcome_sliced_as_whole(monkeypatch) -> None:
    # Slice even files that keep most of their lines, so that every fixture is cut somewhere.
    monkeypatch.setattr(slicing, "MAX_KEPT", 1.01)
    checked = sliced = 0
    for root, path in _fixture_files():
        source = path.read_bytes()
        if not any(word in source for word in FOCUS.words):
            continue
        module, is_package = module_name(path)
        context = FileContext(path.relative_to(root).as_posix(), module, is_package)
        whole = migrate_source(source, _rules(), context)
        assert migrate_source(source, _rules(), context, FOCUS) == whole, path
        checked += 1
        try:
            sliced += slicing.plan(source, ast.parse(source), FOCUS) is not None
        except SyntaxError:
            pass
    assert checked > 60 and sliced > 50  # the comparison really ran, on sliced files


@pytest.mark.parametrize("root", sorted(p.name for p in FIXTURES.iterdir() if p.is_dir()))
def test_neither_the_prefilter_nor_slicing_changes_a_plan(root: str) -> None:
    fast = build_plan([FIXTURES / root], ALL, jobs=1)
    full = build_plan([FIXTURES / root], ALL, jobs=1, prefilter=False, slicing=False)
    assert fast.edits == full.edits
    assert fast.findings == full.findings
    # Unparsable files without a trigger fail only when the prefilter lets them through.
    assert set(fast.failures) <= set(full.failures)
