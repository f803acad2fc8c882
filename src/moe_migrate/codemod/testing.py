"""Public helpers to test rules: byte-exact, idempotence included.

Plugin authors can test their own rules with these, as our own tests do::

    from moe_migrate.codemod.testing import assert_rewrites
    assert_rewrites([MyRule], "before\\n", "after\\n")
"""

from __future__ import annotations

import difflib
from typing import Sequence

from moe_migrate.codemod.context import FileContext
from moe_migrate.codemod.outcomes import Changed, FileOutcome, Unchanged
from moe_migrate.codemod.rule import Example, Flagged, Rewrite, Rule
from moe_migrate.codemod.transform import migrate_source

DEFAULT_CONTEXT = FileContext(path="example.py", module="example")


def run(rules: Sequence[type[Rule]], source: str | bytes, context: FileContext = DEFAULT_CONTEXT) -> FileOutcome:
    data = source.encode() if isinstance(source, str) else source
    return migrate_source(data, rules, context)


def _after(outcome: FileOutcome, before: bytes) -> bytes:
    if isinstance(outcome, Changed):
        return outcome.after
    assert isinstance(outcome, Unchanged), f"expected a rewrite, got {outcome!r}"
    return before


def _show(expected: bytes, actual: bytes) -> str:
    diff = difflib.unified_diff(
        expected.decode(errors="replace").splitlines(True),
        actual.decode(errors="replace").splitlines(True),
        "expected",
        "actual",
    )
    return "".join(diff)


def assert_rewrites(
    rules: Sequence[type[Rule]],
    before: str | bytes,
    after: str | bytes,
    context: FileContext = DEFAULT_CONTEXT,
) -> FileOutcome:
    """``before`` becomes exactly ``after`` (bytes), and a second run changes nothing."""
    data = before.encode() if isinstance(before, str) else before
    want = after.encode() if isinstance(after, str) else after
    outcome = run(rules, data, context)
    got = _after(outcome, data)
    assert got == want, "wrong rewrite:\n" + _show(want, got)
    again = run(rules, got, context)
    assert isinstance(again, Unchanged), "not idempotent:\n" + _show(got, _after(again, got))
    return outcome


def assert_unchanged(
    rules: Sequence[type[Rule]], source: str | bytes, context: FileContext = DEFAULT_CONTEXT
) -> None:
    """``source`` is left byte-for-byte alone with no finding (a look-alike)."""
    outcome = run(rules, source, context)
    assert isinstance(outcome, Unchanged), f"noisy: changed a look-alike\n{_show(source.encode() if isinstance(source, str) else source, _after(outcome, b''))}"
    assert not outcome.findings, f"noisy: flagged a look-alike: {outcome.findings}"


def assert_example(rules: Sequence[type[Rule]], example: Example, rule_id: str) -> None:
    """Check one of a rule's ``EXAMPLES`` (``rules`` holds the rule and its partners)."""
    context = FileContext(
        path=example.module.replace(".", "/") + ("/__init__.py" if example.is_package else ".py"),
        module=example.module,
        is_package=example.is_package,
    )
    if isinstance(example, Rewrite):
        outcome = assert_rewrites(rules, example.before, example.after, context)
        assert rule_id in outcome.rules, f"{rule_id} did not take part in the rewrite"
    elif isinstance(example, Flagged):
        outcome = run(rules, example.source, context)
        after = example.after if example.after is not None else example.source
        got = _after(outcome, example.source.encode())
        assert got == after.encode(), "wrong rewrite:\n" + _show(after.encode(), got)
        lines = tuple(sorted(f.line for f in outcome.findings if f.rule == rule_id))
        assert lines == tuple(sorted(example.lines)), f"missing/noisy findings: got lines {lines}"
    else:
        assert_unchanged(rules, example.source, context)


def explain_text(rule: type[Rule]) -> str:
    """``--explain``: the rule's docstring, then each example as a diff or a listing."""
    import inspect

    lines = [rule.ID, "=" * len(rule.ID), "", inspect.cleandoc(rule.__doc__ or ""), ""]
    for example in rule.EXAMPLES:
        if isinstance(example, Rewrite):
            lines.append(f"Rewrite ({example.note}):" if example.note else "Rewrite:")
            diff = difflib.unified_diff(
                example.before.splitlines(True), example.after.splitlines(True), n=10
            )
            body = [line.rstrip("\n") for line in list(diff)[2:] if not line.startswith("@@")]
        elif isinstance(example, Flagged):
            lines.append(f"Flagged ({example.note}):" if example.note else "Flagged:")
            body = [f" {line}" for line in example.source.splitlines()]
        else:
            lines.append(f"Unchanged ({example.note}):" if example.note else "Unchanged:")
            body = [f" {line}" for line in example.source.splitlines()]
        lines.extend("    " + line for line in body)
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
