"""What analysis says about one file: frozen, picklable values.

Outcomes travel back from worker processes, so every field is a plain value (str, int, bytes,
tuples of those). Nothing here touches the disk or the terminal. The closed union
``FileOutcome = Changed | Unchanged | Deleted | Skipped | Failed`` is what
:func:`moe_migrate.codemod.transform.migrate_source` returns and what every reporter consumes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Union


class Severity(str, enum.Enum):
    """How much a finding needs a human. ``error`` and ``warning`` both fail a check run."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True, order=True)
class Finding:
    """Something a rule saw but could not (or must not) rewrite by itself.

    Positions are 1-based lines and 1-based columns, as editors, SARIF and GitHub count them;
    ``end_column`` is exclusive.
    """

    #: POSIX path relative to the root the run was given.
    path: str
    line: int
    column: int
    end_line: int
    end_column: int
    #: Kebab-case id of the rule that reported it.
    rule: str
    severity: Severity
    #: What is wrong, in one sentence a maintainer can act on.
    message: str
    #: What to do instead; ``None`` when the message already says it.
    fix: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "rule": self.rule,
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "end_line": self.end_line,
            "end_column": self.end_column,
            "severity": self.severity.value,
            "message": self.message,
            "fix": self.fix,
        }


@dataclass(frozen=True)
class Changed:
    """The file's bytes change; ``rules`` lists the ids that edited it, sorted."""

    path: str
    before: bytes
    after: bytes
    rules: tuple[str, ...]
    findings: tuple[Finding, ...] = ()
    status = "changed"


@dataclass(frozen=True)
class Created:
    """A file the migration adds (a tree-level action)."""

    path: str
    after: bytes
    rules: tuple[str, ...]
    findings: tuple[Finding, ...] = ()
    status = "created"
    before = b""


@dataclass(frozen=True)
class Deleted:
    """A file the migration removes (a tree-level action)."""

    path: str
    before: bytes
    rules: tuple[str, ...]
    findings: tuple[Finding, ...] = ()
    status = "deleted"
    after = b""


@dataclass(frozen=True)
class Unchanged:
    """Analysed; nothing to rewrite (findings may still need a human)."""

    path: str
    findings: tuple[Finding, ...] = ()
    rules: tuple[str, ...] = ()
    status = "unchanged"


@dataclass(frozen=True)
class Skipped:
    """Deliberately not analysed (for example: the prefilter found no trigger)."""

    path: str
    reason: str
    findings: tuple[Finding, ...] = ()
    rules: tuple[str, ...] = ()
    status = "skipped"


@dataclass(frozen=True)
class Failed:
    """Could not be analysed. ``stage`` is ``read``, ``parse``, ``rule`` or ``write``."""

    path: str
    stage: str
    message: str
    traceback: str | None = field(default=None, compare=False)
    findings: tuple[Finding, ...] = ()
    rules: tuple[str, ...] = ()
    status = "failed"


FileOutcome = Union[Changed, Created, Deleted, Unchanged, Skipped, Failed]

#: Outcomes whose bytes differ from what is on disk.
EDITS = (Changed, Created, Deleted)
