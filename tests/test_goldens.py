"""Byte-exact golden files: fixtures/edge/input/X.py must become fixtures/edge/expected/X.py."""

from __future__ import annotations

import pytest

from conftest import FIXTURES
from moe_migrate.codemod.outcomes import Changed, Unchanged
from moe_migrate.codemod.testing import run

INPUTS = sorted((FIXTURES / "edge" / "input").glob("*.py"))


@pytest.mark.parametrize("source", INPUTS, ids=[p.stem for p in INPUTS])
def test_golden(source, all_rules, update_goldens: bool) -> None:
    expected_path = FIXTURES / "edge" / "expected" / source.name
    before = source.read_bytes()
    outcome = run(all_rules, before)
    assert isinstance(outcome, (Changed, Unchanged)), outcome
    after = outcome.after if isinstance(outcome, Changed) else before
    if update_goldens:
        expected_path.write_bytes(after)
    assert after == expected_path.read_bytes()
    again = run(all_rules, after)
    assert isinstance(again, Unchanged), "a second run must change nothing"


def test_goldens_keep_their_peculiarities() -> None:
    expected = FIXTURES / "edge" / "expected"
    assert (expected / "bom.py").read_bytes().startswith(b"\xef\xbb\xbf")
    crlf = (expected / "crlf.py").read_bytes()
    assert crlf.count(b"\r\n") == crlf.count(b"\n")
    assert "Müller".encode("latin-1") in (expected / "latin1.py").read_bytes()
    assert b"\t\tself.experts = FusedMoE(" in (expected / "tabs.py").read_bytes()
    assert not (expected / "no_final_newline.py").read_bytes().endswith(b"\n")
