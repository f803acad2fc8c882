"""The JSON report, schema ``moe-migrate/report/v1`` (documented in the README)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Mapping

from moe_migrate import __version__
from moe_migrate.codemod.outcomes import Failed
from moe_migrate.codemod.report.diff import diff_text
from moe_migrate.codemod.run import Plan

SCHEMA = "moe-migrate/report/v1"
STATUSES = ("changed", "unchanged", "deleted", "created", "skipped", "failed")


def report(plan: Plan, mode: str, smoke: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The report as plain data; ``mode`` is ``apply``, ``check`` or ``diff``."""
    files = [
        {
            "path": o.path,
            "status": o.status,
            "rules": list(o.rules),
            "diff": diff_text(o),
            "error": o.message if isinstance(o, Failed) else None,
        }
        for o in plan.outcomes
    ]
    statuses = Counter(o.status for o in plan.outcomes)
    findings = plan.findings
    return {
        "schema": SCHEMA,
        "tool": {"name": "moe-migrate", "version": __version__},
        "root": plan.root.as_posix(),
        "mode": mode,
        "files": files,
        "findings": [f.to_json() for f in findings],
        "smoke": dict(smoke) if smoke is not None else None,
        "summary": {
            "scanned": plan.scanned,
            "analysed": sum(1 for o in plan.outcomes if getattr(o, "stage", None) != "read"),
            **{status: statuses[status] for status in STATUSES},
            "findings": dict(sorted(Counter(f.rule for f in findings).items())),
            "rules": list(plan.rules),
        },
    }


def render(plan: Plan, mode: str, smoke: Mapping[str, Any] | None = None) -> str:
    return json.dumps(report(plan, mode, smoke), indent=2, sort_keys=False) + "\n"
