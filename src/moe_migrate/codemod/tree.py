"""Tree-level steps: what a rule does once per run, after every file had its own pass.

Some migrations are not about one file: deleting a module, cleaning the package that
re-exported it, adding a helper to another package, or deciding whether a per-file finding
matters given what the tree defines elsewhere. A rule that needs this defines a classmethod
``finish(tree) -> Mapping[path, FileOutcome]``; the engine calls it in the parent process with
a :class:`Tree` and merges what it returns into the Plan. It stays pure: a tree step reads the
proposed sources through the Tree and returns outcomes; it never writes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from moe_migrate.codemod.context import FileContext
from moe_migrate.codemod.outcomes import (
    Changed,
    Created,
    Deleted,
    Failed,
    FileOutcome,
    Finding,
    Unchanged,
)

if TYPE_CHECKING:
    from moe_migrate.codemod.rule import Rule


@dataclass
class Tree:
    """The tree as the per-file pass left it: proposed sources, outcomes, module names."""

    root: Path
    #: Dotted module name -> POSIX path (relative to ``root``), for every discovered file.
    modules: Mapping[str, str]
    #: POSIX path -> outcome so far (only files that were analysed or failed).
    outcomes: dict[str, FileOutcome]

    def path_of(self, module: str) -> str | None:
        return self.modules.get(module)

    def context(self, path: str) -> FileContext:
        module = next((m for m, p in self.modules.items() if p == path), None)
        return FileContext(path, module, path.endswith("__init__.py") or path.endswith("__init__.pyi"))

    def original(self, path: str) -> bytes:
        """The bytes on disk before the run."""
        outcome = self.outcomes.get(path)
        if isinstance(outcome, (Changed, Deleted)):
            return outcome.before
        return (self.root / path).read_bytes()

    def source(self, path: str) -> bytes | None:
        """The proposed bytes (``None`` if the migration deletes the file)."""
        outcome = self.outcomes.get(path)
        if isinstance(outcome, Deleted):
            return None
        if isinstance(outcome, (Changed, Created)):
            return outcome.after
        return (self.root / path).read_bytes()

    def rewrite(self, path: str, rules: Sequence[type["Rule"]]) -> FileOutcome:
        """Run ``rules`` over the proposed source of ``path``; the outcome is relative to disk."""
        from moe_migrate.codemod.transform import migrate_source

        current = self.source(path)
        if current is None:
            return self.outcomes[path]
        step = migrate_source(current, rules, self.context(path))
        if isinstance(step, Failed):
            return step
        return self._relative_to_disk(path, step.after if isinstance(step, Changed) else current, step.rules, step.findings)

    def delete(self, path: str, rule_id: str) -> Deleted:
        previous = self.outcomes.get(path)
        findings = previous.findings if previous is not None else ()
        return Deleted(path, self.original(path), (rule_id,), findings)

    def _relative_to_disk(
        self, path: str, after: bytes, rules: tuple[str, ...], findings: tuple[Finding, ...]
    ) -> FileOutcome:
        previous = self.outcomes.get(path)
        all_rules = tuple(sorted(set(rules) | set(previous.rules if previous else ())))
        all_findings = tuple(sorted(set(findings) | set(previous.findings if previous else ())))
        before = self.original(path)
        if after == before:
            return Unchanged(path, all_findings, all_rules)
        return Changed(path, before, after, all_rules, all_findings)

    def merge(self, updates: Mapping[str, FileOutcome]) -> None:
        self.outcomes.update(updates)

    def without_findings(self, rule_id: str) -> dict[str, FileOutcome]:
        """Updates that drop every finding of ``rule_id`` (a tree step that decides they don't apply)."""
        out: dict[str, FileOutcome] = {}
        for path, outcome in self.outcomes.items():
            kept = tuple(f for f in outcome.findings if f.rule != rule_id)
            if kept != outcome.findings:
                out[path] = replace(outcome, findings=kept)
        return out
