"""Orchestration: paths -> a :class:`Plan`, the one immutable result of analysis.

Files are read once, in the parent; the byte prefilter drops every file that contains none of
the selected rules' triggers before anything is parsed (LibCST is not even imported when no
file passes). Candidates are migrated serially or in a process pool; outcomes are sorted by
path, never by completion order.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from moe_migrate.codemod.context import FileContext
from moe_migrate.codemod.discover import discover, module_name, relative
from moe_migrate.codemod.outcomes import EDITS, Deleted, Failed, FileOutcome, Finding

#: Below this many candidate files a pool costs more than it saves.
POOL_THRESHOLD = 4


@dataclass(frozen=True)
class Plan:
    """Every file's outcome, sorted by path; what writers, reporters and the smoke test read."""

    root: Path
    #: Outcomes of the files that were analysed (passed the prefilter) or failed to be read.
    outcomes: tuple[FileOutcome, ...]
    #: How many files discovery found (analysed or not).
    scanned: int
    rules: tuple[str, ...]
    #: Every discovered file (POSIX, relative to ``root``), analysed or not.
    files: tuple[str, ...] = ()
    #: Findings about the tree rather than one file's rewrite (e.g. the smoke test's).
    extra_findings: tuple[Finding, ...] = ()

    @property
    def edits(self) -> tuple[FileOutcome, ...]:
        return tuple(o for o in self.outcomes if isinstance(o, EDITS))

    @property
    def failures(self) -> tuple[Failed, ...]:
        return tuple(o for o in self.outcomes if isinstance(o, Failed))

    @property
    def findings(self) -> tuple[Finding, ...]:
        return tuple(sorted([*(f for o in self.outcomes for f in o.findings), *self.extra_findings]))

    def sources(self, containing: bytes) -> dict[str, bytes]:
        """The tree as the migration leaves it: every file that contains ``containing``.

        Proposed bytes for the files the Plan edits (deleted files are absent), bytes on disk
        for the rest; nothing needs to have been written. Unreadable files are left out.
        """
        edits = {o.path: o for o in self.edits}
        out: dict[str, bytes] = {}
        for path in sorted({*self.files, *edits}):
            outcome = edits.get(path)
            if isinstance(outcome, Deleted):
                continue
            try:
                data = outcome.after if outcome is not None else (self.root / path).read_bytes()
            except OSError:
                continue
            if containing in data:
                out[path] = data
        return out


@dataclass(frozen=True)
class Candidate:
    path: Path
    source: bytes
    context: FileContext


_WORKER_RULES: list[type] = []
#: What the rules look at (``None``: the whole of every file: slicing is off).
_WORKER_FOCUS: list[object] = [None]


def _init_worker(rule_ids: Sequence[str], slicing: bool = True) -> None:
    from moe_migrate import rules

    _WORKER_RULES[:] = [rules.load(rule_id) for rule_id in rule_ids]
    _WORKER_FOCUS[0] = rules.focus(rule_ids) if slicing else None


def _migrate(candidate: Candidate) -> FileOutcome:
    """One file, with Python's cyclic garbage collector held off until it is done.

    LibCST allocates hundreds of thousands of small objects per file, and the collector's
    young-generation passes over them were a fifth of the time; the few cycles a file leaves
    are collected once, after it (without that, ten copies of the vLLM tree grow to 350 MB).
    """
    from moe_migrate.codemod.transform import migrate_source

    enabled = gc.isenabled()
    gc.disable()
    try:
        return migrate_source(candidate.source, _WORKER_RULES, candidate.context, _WORKER_FOCUS[0])  # type: ignore[arg-type]
    finally:
        if enabled:
            gc.enable()
        gc.collect(0)


def build_plan(
    paths: Sequence[Path],
    rule_ids: Sequence[str],
    *,
    excludes: Sequence[str] = (),
    jobs: int | None = None,
    prefilter: bool = True,
    slicing: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> Plan:
    """Discover, read, prefilter and migrate. Raises only ``DiscoveryError`` (bad arguments).

    ``prefilter=False`` parses every file; ``slicing=False`` shows the rules whole files
    (both only to check that they change nothing).

    ``progress(done, total)`` is called with ``done=0`` once the files to analyse are known,
    then after each one (the terminal draws its bar from it).
    """
    from moe_migrate import rules

    found = discover(paths, excludes)
    triggers = tuple({t for rule_id in rule_ids for t in rules.spec(rule_id).triggers})
    outcomes: list[FileOutcome] = []
    candidates: list[Candidate] = []
    for path in found.files:
        # None: no trigger, never parsed. Failed: unreadable, too large, or a link out of the roots.
        source = found.read(path, triggers if prefilter else None)
        if source is None:
            continue
        if isinstance(source, Failed):
            outcomes.append(source)
            continue
        module, is_package = module_name(path)
        context = FileContext(relative(path, found.root), module, is_package)
        candidates.append(Candidate(path, source, context))
    outcomes.extend(_counted(_run(candidates, rule_ids, jobs, slicing), len(candidates), progress))
    if candidates:
        outcomes = _finish(found.root, found.files, outcomes, rule_ids)
    outcomes.sort(key=lambda o: o.path)
    files = tuple(relative(path, found.root) for path in found.files)
    return Plan(found.root, tuple(outcomes), len(found.files), tuple(rule_ids), files)


def _finish(
    root: Path, files: Sequence[Path], outcomes: list[FileOutcome], rule_ids: Sequence[str]
) -> list[FileOutcome]:
    """Run the tree-level steps of the rules that have one (see :mod:`codemod.tree`)."""
    from moe_migrate import rules
    from moe_migrate.codemod.tree import Tree

    steps = [rules.load(rule_id) for rule_id in rule_ids if rules.spec(rule_id).tree]
    if not steps:
        return outcomes
    modules = {}
    for path in files:
        module, _ = module_name(path)
        if module is not None:
            modules.setdefault(module, relative(path, root))
    tree = Tree(root, modules, {o.path: o for o in outcomes})
    for rule in steps:
        tree.merge(rule.finish(tree))  # type: ignore[attr-defined]
    return list(tree.outcomes.values())


def _counted(
    results: Iterable[FileOutcome], total: int, progress: Callable[[int, int], None] | None
) -> list[FileOutcome]:
    if progress is None:
        return list(results)
    progress(0, total)
    done = []
    for outcome in results:
        done.append(outcome)
        progress(len(done), total)
    return done


def _run(
    candidates: list[Candidate], rule_ids: Sequence[str], jobs: int | None, slicing: bool
) -> Iterator[FileOutcome]:
    """Outcomes as they finish (a generator, so the caller can count them)."""
    jobs = jobs or os.cpu_count() or 1
    if not candidates:
        return
    if jobs == 1 or len(candidates) < POOL_THRESHOLD:
        _init_worker(rule_ids, slicing)
        yield from (_migrate(c) for c in candidates)
        return
    # Loaded here, before the fork: the workers inherit LibCST and the rules instead of each
    # importing them, and the tree-level steps need them here afterwards anyway.
    _init_worker(rule_ids, slicing)
    # Largest files first so one big file does not finish alone at the end.
    ordered = sorted(candidates, key=lambda c: len(c.source), reverse=True)
    # A worker that dies (a segfault, the OOM killer) costs only its own file (codemod.pool).
    # Imported here: a pre-commit run on a file or two never needs a process pool.
    from moe_migrate.codemod.pool import map_resilient

    yield from map_resilient(
        _migrate,
        ordered,
        workers=min(jobs, len(candidates)),
        on_death=_died,
        initializer=_init_worker,
        initargs=(tuple(rule_ids), slicing),
    )


def _died(candidate: Candidate, reason: str) -> FileOutcome:
    return Failed(
        candidate.context.path,
        "rule",
        f"the worker process died while migrating this file ({reason}); the other files were "
        "migrated. Please report it with this file, or pass --exclude for it.",
    )
