"""A Markdown job summary: counts, a table per rule, findings with links, collapsible diffs.

GitHub refuses a step summary over 1 MiB, so the summary is built within ``limit`` bytes
(UTF-8): sections go in order of importance, and the first piece that does not fit ends the
report with a note saying what was left out and where to find it.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from dataclasses import replace
from typing import Any, Iterable, Mapping

from moe_migrate import __version__
from moe_migrate.codemod.report.common import Item, Links, counts, items
from moe_migrate.codemod.report.diff import diff_text
from moe_migrate.codemod.run import Plan

#: GitHub's limit for one step's summary is 1 MiB; stay a little under it.
LIMIT = 1024 * 1024 - 4096
#: The longest diff shown for one file; longer ones are cut so that one file cannot crowd out
#: the rest.
MAX_DIFF = 64 * 1024
_NOTE_ROOM = 512
_MODES = {"apply": "moe-migrate", "check": "moe-migrate --check", "diff": "moe-migrate --diff"}


class _Budget:
    """Collects pieces while they fit; remembers what it had to leave out."""

    def __init__(self, limit: int) -> None:
        self.limit = max(limit - _NOTE_ROOM, 0)
        self.parts: list[str] = []
        self.used = 0
        self.left_out: Counter[str] = Counter()

    def add(self, text: str, what: str | None = None) -> bool:
        size = len(text.encode("utf-8"))
        if self.left_out or self.used + size > self.limit:
            if what:
                self.left_out[what] += 1
            return False
        self.parts.append(text)
        self.used += size
        return True

    def text(self) -> str:
        out = "".join(self.parts)
        if self.left_out:
            missing = ", ".join(f"{n} {what}" for what, n in self.left_out.items())
            out += (
                f"\n> [!NOTE]\n> This summary stops here to stay within GitHub's 1 MiB limit "
                f"({missing} not shown). The JSON and SARIF reports, and `moe-migrate --diff`, "
                "have everything.\n"
            )
        return out


def cell(text: str) -> str:
    """Text safe inside a table cell: no HTML, no pipes, no line breaks."""
    return html.escape(text, quote=False).replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def code(text: str) -> str:
    """An inline code span that survives backticks in ``text``."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _where(item: Item, links: Links) -> str:
    label = cell(f"{links.path(item.path)}:{item.line}")
    url = links.url(item.path, item.line)
    return f"[{label}]({url})" if url else label


def _table(header: Iterable[str], rows: Iterable[Iterable[object]], aligns: str) -> str:
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in aligns) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n\n"


def _headline(plan: Plan, mode: str) -> str:
    edits, findings, failed = len(plan.edits), len(plan.findings), len(plan.failures)
    if not (edits or findings or failed):
        return "nothing to migrate"
    verb = "rewritten" if mode == "apply" else "to rewrite"
    parts = [f"{edits} file{'s' if edits != 1 else ''} {verb}"]
    if findings:
        parts.append(f"{findings} finding{'s' if findings != 1 else ''} to look at")
    if failed:
        parts.append(f"{failed} file{'s' if failed != 1 else ''} failed")
    return ", ".join(parts)


def _counts(plan: Plan, mode: str) -> str:
    numbers = counts(plan)
    header = ["files scanned", "rewritten" if mode == "apply" else "to rewrite", "unchanged", "skipped", "failed", "findings"]
    return _table(header, [list(numbers.values())], "r" * len(header))


def _rules(plan: Plan) -> str:
    files = Counter(rule for o in plan.edits for rule in o.rules)
    findings = Counter(f.rule for f in plan.findings)
    rows = [[code(rule), files[rule], findings[rule]] for rule in plan.rules if files[rule] or findings[rule]]
    return "### Rules\n\n" + _table(["rule", "files", "findings"], rows, "lrr") if rows else ""


def _smoke(smoke: Mapping[str, Any]) -> str:
    if smoke.get("skipped_reason"):
        return f"### Smoke test\n\nDid not run: {cell(str(smoke['skipped_reason']))}\n\n"
    summary = smoke.get("summary") or {}
    rows = [[cell(str(status)), count] for status, count in summary.items()]
    where = ", ".join(cell(str(smoke[k])) for k in ("device", "backend") if smoke.get(k))
    return "### Smoke test\n\n" + (f"On {where}.\n\n" if where else "") + _table(["cases", ""], rows, "lr")


def _diff_block(outcome: Any, links: Links) -> str:
    text = diff_text(replace(outcome, path=links.path(outcome.path))) or ""
    added = sum(1 for line in text.splitlines() if line.startswith("+") and not line.startswith("+++"))
    removed = sum(1 for line in text.splitlines() if line.startswith("-") and not line.startswith("---"))
    cut = ""
    if len(text.encode("utf-8")) > MAX_DIFF:
        text = text.encode("utf-8")[:MAX_DIFF].decode("utf-8", "ignore").rpartition("\n")[0] + "\n"
        cut = f"\nThe diff of this file is cut at {MAX_DIFF // 1024} KiB; `moe-migrate --diff` shows all of it.\n"
    longest = max((len(run) for run in re.findall(r"`{3,}", text)), default=2)
    fence = "`" * (longest + 1)
    summary = f"<code>{html.escape(links.path(outcome.path))}</code> (+{added} −{removed})"
    return f"<details><summary>{summary}</summary>\n\n{fence}diff\n{text}{fence}\n{cut}\n</details>\n\n"


def render(
    plan: Plan,
    mode: str,
    *,
    links: Links = Links(),
    smoke: Mapping[str, Any] | None = None,
    limit: int = LIMIT,
) -> str:
    """The summary, at most ``limit`` bytes of UTF-8."""
    budget = _Budget(limit)
    budget.add(f"## moe-migrate: {_headline(plan, mode)}\n\n")
    budget.add(f"{code(_MODES.get(mode, mode))}, moe-migrate {__version__}.\n\n")
    budget.add(_counts(plan, mode))
    found = items(plan, mode)
    failures = [i for i in found if i.kind == "failure"]
    findings = [i for i in found if i.kind == "finding"]
    if failures:
        budget.add("### Files that could not be migrated\n\n")
        for item in failures:
            budget.add(f"- {code(links.path(item.path))}: {cell(item.message)}\n", "failures")
        budget.add("\n")
    if findings:
        budget.add("### Findings that need a human\n\n| where | rule | level | what to do |\n|---|---|---|---|\n")
        for item in findings:
            row = f"| {_where(item, links)} | {code(item.rule or '')} | {item.level} | {cell(item.message)} |\n"
            budget.add(row, "findings")
        budget.add("\n")
    budget.add(_rules(plan))
    if smoke is not None:
        budget.add(_smoke(smoke))
    if plan.edits:
        budget.add("### Changes\n\n" if mode != "apply" else "### Rewritten files\n\n")
        for outcome in plan.edits:
            budget.add(_diff_block(outcome, links), "diffs")
    return budget.text()

