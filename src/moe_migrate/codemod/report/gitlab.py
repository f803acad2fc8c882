"""GitLab Code Quality: a JSON array of issues (``artifacts: reports: codequality:``).

GitLab merges issues with the same ``fingerprint`` into one entry and compares fingerprints
between the source and target branch, so they must be unique within a report and stable
across runs: they hash the rule, the path and what the issue is, never its line.
GitLab does not show ``check_name``, so the description starts with the rule id.
"""

from __future__ import annotations

import json

from moe_migrate.codemod.report.common import Links, fingerprints, items
from moe_migrate.codemod.run import Plan

#: Code Quality's severities: info, minor, major, critical, blocker.
SEVERITIES = {"error": "major", "warning": "minor", "note": "info"}


def report(plan: Plan, mode: str, *, links: Links = Links()) -> list[dict[str, object]]:
    found = items(plan, mode)
    return [
        {
            "description": f"{item.rule or 'moe-migrate'}: {item.message}",
            "check_name": item.rule or f"moe-migrate/{item.outcome.stage}",  # type: ignore[union-attr]
            "fingerprint": fingerprint,
            "severity": "critical" if item.kind == "failure" else SEVERITIES[item.level],
            "location": {
                "path": links.path(item.path),
                "lines": {"begin": item.line, "end": item.end_line},
            },
        }
        for item, fingerprint in zip(found, fingerprints(found))
    ]


def render(plan: Plan, mode: str, *, links: Links = Links()) -> str:
    return json.dumps(report(plan, mode, links=links), indent=2) + "\n"
