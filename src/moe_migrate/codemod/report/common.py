"""What the CI renderers share: where a file is, which lines changed, and the ordered issue list.

Every CI format (SARIF, GitHub workflow commands, GitLab Code Quality, the Markdown summary)
shows the same things in the same order, most important first: files that could not be
analysed, findings by severity, then the files moe-migrate rewrites. :func:`items` builds that
list once from a :class:`~moe_migrate.codemod.run.Plan`; the renderers only format it.
"""

from __future__ import annotations

import os
import posixpath
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from moe_migrate.codemod.outcomes import EDITS, Created, Deleted, Failed, FileOutcome, Finding, Severity
from moe_migrate.codemod.run import Plan

#: Formats ``--report FORMAT=PATH`` and ``--output-format`` accept besides ``text``.
FORMATS = ("json", "markdown", "sarif", "github", "gitlab")

#: SARIF's level vocabulary, which the other formats map from.
LEVELS = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}
_LEVEL_RANK = {"error": 0, "warning": 1, "note": 2}
_KIND_RANK = {"failure": 0, "finding": 1, "rewrite": 2}


@dataclass(frozen=True)
class Links:
    """How reports name files: relative to the repository root, linked to a commit.

    Code scanning, annotations and Code Quality all resolve paths against the repository
    root, while a Plan's paths are relative to the directory the run was given.
    """

    #: POSIX path of the run's root inside the repository; ``""`` when they are the same.
    prefix: str = ""
    #: URL of the tree at this commit, ending in ``/`` (``https://github.com/o/r/blob/SHA/``).
    blob: str | None = None

    def path(self, relative: str) -> str:
        return posixpath.normpath(posixpath.join(self.prefix, relative)) if self.prefix else relative

    def url(self, relative: str, line: int | None = None) -> str | None:
        if self.blob is None:
            return None
        anchor = f"#L{line}" if line else ""
        return f"{self.blob}{self.path(relative)}{anchor}"

    @classmethod
    def discover(cls, root: Path, environ: Mapping[str, str] = os.environ) -> "Links":
        """Links for a run over ``root``: the git work tree's root, GitHub's commit URL if set."""
        from moe_migrate.codemod.git import toplevel

        top = toplevel(root)
        prefix = ""
        if top is not None:
            inside = Path(os.path.relpath(os.path.realpath(root), top)).as_posix()
            prefix = "" if inside == "." else inside
        server, repo, sha = (environ.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_SHA"))
        blob = f"{server.rstrip('/')}/{repo}/blob/{sha}/" if server and repo and sha else None
        return cls(prefix, blob)


@dataclass(frozen=True)
class Hunk:
    """One changed run of lines: 0-based, half-open ranges in the old and new file."""

    old_start: int
    old_end: int
    new_start: int
    new_end: int


def hunks(outcome: FileOutcome) -> list[Hunk]:
    """The changed line ranges of an edit, first to last; ``[]`` for anything else."""
    if not isinstance(outcome, EDITS):
        return []
    import difflib

    old, new = outcome.before.splitlines(True), outcome.after.splitlines(True)
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    return [Hunk(i1, i2, j1, j2) for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal"]


def line_text(source: bytes, line: int) -> str:
    """Line ``line`` (1-based) of ``source`` without its newline, decoded leniently."""
    lines = source.splitlines()
    return lines[line - 1].decode("utf-8", "replace") if 0 < line <= len(lines) else ""


@dataclass(frozen=True)
class Item:
    """One thing a CI report shows: a failed file, a finding, or a file to rewrite."""

    #: ``error``, ``warning`` or ``note`` (SARIF's words; the renderers map them).
    level: str
    #: ``failure``, ``finding`` or ``rewrite``.
    kind: str
    #: Path as the run reported it (relative to the run's root).
    path: str
    line: int
    column: int
    end_line: int
    end_column: int
    #: Rule id, ``None`` for a failure.
    rule: str | None
    #: A few words: the annotation title.
    title: str
    #: What happened and what to do, in full.
    message: str
    #: What identifies the item across runs, whatever its line (fingerprints hash it).
    identity: str
    outcome: FileOutcome | None = None
    finding: Finding | None = None


def items(plan: Plan, mode: str) -> list[Item]:
    """Everything to report, most important first (errors, warnings, notes; then by path)."""
    found = [_failure(o) for o in plan.failures]
    found += [_finding(f) for f in plan.findings]
    found += [_rewrite(o, mode) for o in plan.edits]
    found.sort(key=lambda i: (_LEVEL_RANK[i.level], _KIND_RANK[i.kind], i.path, i.line, i.column))
    return found


def counts(plan: Plan) -> dict[str, int]:
    """Files scanned, edited, unchanged (parsed or not), skipped, failed; findings."""
    statuses = Counter(o.status for o in plan.outcomes)
    # Files without a trigger have no outcome; created files were never scanned.
    not_parsed = plan.scanned - (len(plan.outcomes) - statuses["created"])
    return {
        "scanned": plan.scanned,
        "edited": len(plan.edits),
        "unchanged": statuses["unchanged"] + max(not_parsed, 0),
        "skipped": statuses["skipped"],
        "failed": statuses["failed"],
        "findings": len(plan.findings),
    }


def fingerprints(found: Sequence[Item]) -> list[str]:
    """A stable, unique hash per item: same item, same hash, even after lines move."""
    import hashlib

    seen: Counter[str] = Counter()
    out = []
    for item in found:
        key = f"moe-migrate\0{item.rule}\0{item.path}\0{item.identity}"
        out.append(hashlib.sha256(f"{key}\0{seen[key]}".encode()).hexdigest())
        seen[key] += 1
    return out


def _failure(outcome: Failed) -> Item:
    return Item(
        "error", "failure", outcome.path, 1, 1, 1, 1, None,
        f"moe-migrate could not {'write' if outcome.stage == 'write' else 'analyse'} this file",
        outcome.message, f"failed:{outcome.stage}", outcome=outcome,
    )


def _finding(finding: Finding) -> Item:
    message = f"{finding.message} Fix: {finding.fix}" if finding.fix else finding.message
    return Item(
        LEVELS[finding.severity], "finding", finding.path, finding.line, finding.column,
        finding.end_line, finding.end_column, finding.rule, f"moe-migrate ({finding.rule})",
        message, f"finding:{finding.message}", finding=finding,
    )


def _rewrite(outcome: FileOutcome, mode: str) -> Item:
    done = mode == "apply"
    changes = hunks(outcome)
    rules = ", ".join(outcome.rules)
    if isinstance(outcome, (Created, Deleted)):
        verb = outcome.status if done else {"created": "create", "deleted": "delete"}[outcome.status]
        what = f"moe-migrate {'' if done else 'would '}{verb} this file ({rules})."
        line = end = 1
    else:
        first = changes[0] if changes else Hunk(0, 1, 0, 1)
        line = min(first.old_start + 1, max(1, len(outcome.before.splitlines())))
        end = max(line, first.old_end)
        count = f"{len(changes)} change{'s' if len(changes) != 1 else ''}"
        what = (
            f"moe-migrate rewrote this file ({rules}): {count}."
            if done
            else f"moe-migrate would rewrite this file ({rules}): {count}, the first at line {line}."
        )
    advice = "" if done else " Run moe-migrate on it to rewrite it."
    end_column = len(line_text(outcome.before, end)) + 1
    return Item(
        "note" if done else "warning", "rewrite", outcome.path, line, 1, end, end_column,
        outcome.rules[0] if outcome.rules else None,
        f"moe-migrate: {'rewritten' if done else 'needs migrating'} ({rules})",
        what + advice, f"{outcome.status}:{rules}", outcome=outcome,
    )


def render(
    fmt: str,
    plan: Plan,
    mode: str,
    *,
    links: Links = Links(),
    smoke: Mapping[str, Any] | None = None,
    limit: int | None = None,
) -> str:
    """Render ``plan`` in ``fmt`` (one of :data:`FORMATS`); imports only that renderer."""
    import importlib

    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; choose from {', '.join(FORMATS)}")
    module = importlib.import_module(f"{__package__}.{fmt}")
    if fmt == "json":
        return module.render(plan, mode, smoke)
    if fmt == "markdown":
        extra = {} if limit is None else {"limit": limit}
        return module.render(plan, mode, links=links, smoke=smoke, **extra)
    return module.render(plan, mode, links=links)
