"""SARIF 2.1.0, as GitHub code scanning reads it.

``tool.driver.rules`` lists every rule moe-migrate has (id, short and full description, help,
default level), whether it ran or not, so a result's ``ruleIndex`` always points somewhere.
There is one result per finding and one per file moe-migrate rewrites, the latter with a
``fixes`` entry that carries the whole rewrite, hunk by hunk. Files that could not be analysed
are tool execution notifications, not results: they say nothing about the code.

Columns count Unicode code points (``columnKind``), as the findings do.
"""

from __future__ import annotations

import base64
import inspect
import json
from typing import Any

from moe_migrate import __version__
from moe_migrate.codemod.outcomes import FileOutcome
from moe_migrate.codemod.report.common import LEVELS, Item, Links, fingerprints, hunks, items
from moe_migrate.codemod.run import Plan

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
#: Key of the fingerprint moe-migrate computes (stable across runs and line moves).
FINGERPRINT = "moeMigrate/v1"


def rule_descriptors() -> list[dict[str, Any]]:
    """``reportingDescriptor`` objects for every rule in the catalog, in catalog order."""
    from moe_migrate import rules
    from moe_migrate.codemod.testing import explain_text

    descriptors = []
    for spec in rules.CATALOG:
        rule = rules.load(spec.id)
        doc = inspect.cleandoc(rule.__doc__ or spec.id)
        summary, _, body = doc.partition("\n")
        full = "\n\n".join(" ".join(p.split()) for p in body.split("\n\n") if p.strip()) or summary
        descriptors.append(
            {
                "id": spec.id,
                "name": rule.__name__,
                "shortDescription": {"text": summary.strip()},
                "fullDescription": {"text": full},
                "help": {"text": explain_text(rule)},
                "defaultConfiguration": {"level": LEVELS[rule.SEVERITY]},
            }
        )
    return descriptors


def _location(item: Item, links: Links) -> dict[str, Any]:
    return {
        "physicalLocation": {
            "artifactLocation": {"uri": links.path(item.path)},
            "region": {
                "startLine": item.line,
                "startColumn": item.column,
                "endLine": item.end_line,
                "endColumn": item.end_column,
            },
        }
    }


def _start_of(lines: list[bytes], index: int) -> tuple[int, int]:
    """(line, column) where 0-based line ``index`` starts; ``len(lines)`` means end of file."""
    if index < len(lines) or not lines:
        return index + 1, 1
    last = lines[-1]
    if last.endswith((b"\n", b"\r")):
        return len(lines) + 1, 1
    return len(lines), len(last.decode("utf-8", "replace")) + 1


def _content(data: bytes) -> dict[str, str]:
    try:
        return {"text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"binary": base64.b64encode(data).decode("ascii")}


def fix(outcome: FileOutcome, links: Links) -> dict[str, Any]:
    """The whole rewrite of one file as a SARIF ``fix``: one replacement per changed hunk."""
    old, new = outcome.before.splitlines(True), outcome.after.splitlines(True)
    replacements = []
    for hunk in hunks(outcome):
        (start_line, start_column), (end_line, end_column) = _start_of(old, hunk.old_start), _start_of(old, hunk.old_end)
        replacements.append(
            {
                "deletedRegion": {
                    "startLine": start_line,
                    "startColumn": start_column,
                    "endLine": end_line,
                    "endColumn": end_column,
                },
                "insertedContent": _content(b"".join(new[hunk.new_start : hunk.new_end])),
            }
        )
    return {
        "description": {"text": f"Apply moe-migrate's rewrite ({', '.join(outcome.rules)})."},
        "artifactChanges": [
            {"artifactLocation": {"uri": links.path(outcome.path)}, "replacements": replacements}
        ],
    }


def report(plan: Plan, mode: str, *, links: Links = Links()) -> dict[str, Any]:
    descriptors = rule_descriptors()
    index = {d["id"]: i for i, d in enumerate(descriptors)}
    found = [item for item in items(plan, mode) if item.kind != "failure"]
    results = []
    for item, fingerprint in zip(found, fingerprints(found)):
        result: dict[str, Any] = {"ruleId": item.rule}
        if item.rule in index:
            result["ruleIndex"] = index[item.rule]
        result.update(
            level=item.level,
            message={"text": item.message},
            locations=[_location(item, links)],
            partialFingerprints={FINGERPRINT: fingerprint},
        )
        if item.kind == "rewrite" and mode != "apply":
            result["fixes"] = [fix(item.outcome, links)]  # type: ignore[arg-type]
        results.append(result)
    notifications = [
        {
            "level": "error",
            "message": {"text": failed.message},
            "descriptor": {"id": f"moe-migrate/{failed.stage}"},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": links.path(failed.path)}}}],
        }
        for failed in plan.failures
    ]
    invocation: dict[str, Any] = {"executionSuccessful": not notifications}
    if notifications:
        invocation["toolExecutionNotifications"] = notifications
    return {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "moe-migrate",
                        "version": __version__,
                        "semanticVersion": __version__,
                        "rules": descriptors,
                    }
                },
                "invocations": [invocation],
                "columnKind": "unicodeCodePoints",
                "results": results,
                "properties": {"mode": mode},
            }
        ],
    }


def render(plan: Plan, mode: str, *, links: Links = Links()) -> str:
    return json.dumps(report(plan, mode, links=links), indent=2) + "\n"
