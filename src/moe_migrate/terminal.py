"""What a person sees on stderr: progress, one line per file, findings, a closing summary.

Used only by :mod:`moe_migrate.cli`. Everything goes to one console on stderr, so stdout stays
the payload (diffs, reports). On a terminal that is rich's (colour, honouring ``NO_COLOR``);
when stderr is not a terminal (a pre-commit hook, CI, a pipe) it is :class:`PlainConsole`,
which writes the same text without importing rich at all (rich costs 70 ms of every run).
The progress bar shows only on an interactive terminal, never under CI, and only for runs with
more than a handful of files to analyse. ``quiet`` keeps errors only.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence, TextIO

if TYPE_CHECKING:
    from rich.console import Console

    from moe_migrate.codemod.outcomes import FileOutcome
    from moe_migrate.codemod.run import Plan

#: Up to this many files to analyse, a progress bar would only flicker.
HANDFUL = 8
_VERBS = {"apply": "rewrote", "check": "would rewrite", "diff": "would rewrite"}


def in_ci(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether a CI service runs us (``CI`` set to anything but empty/0/false, or Actions)."""
    value = environ.get("CI", "").strip().lower()
    return value not in ("", "0", "false", "no") or environ.get("GITHUB_ACTIONS") == "true"


class PlainConsole:
    """What the terminal needs of a rich console, for a stderr that is not a terminal."""

    is_interactive = False

    def __init__(self, file: TextIO | None = None) -> None:
        self.file = file or sys.stderr

    def print(self, text: object = "", *, style: str | None = None, markup: bool = True) -> None:
        self.file.write(f"{text}\n")


def plain_table(headers: Sequence[str], justify: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table laid out as rich lays out ``box.SIMPLE_HEAD`` without edges (a test holds them
    to the same text): columns three spaces apart, a rule under the header."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]

    def line(cells: Sequence[str]) -> str:
        return "   ".join(
            cell.rjust(width) if how == "right" else cell.ljust(width) for cell, width, how in zip(cells, widths, justify)
        )

    rule = "\u2500" * (sum(widths) + 3 * (len(widths) - 1))
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def _console() -> "Console | PlainConsole":
    """Rich's console on a terminal (or where colour is forced), the plain one elsewhere."""
    forced = any(os.environ.get(name) for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"))
    if not forced and not sys.stderr.isatty():
        return PlainConsole()
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


class Terminal:
    """The stderr side of one run. ``console`` is for tests; by default :func:`_console`."""

    def __init__(
        self,
        *,
        quiet: bool = False,
        verbose: bool = False,
        progress: bool = True,
        console: "Console | PlainConsole | None" = None,
    ) -> None:
        self.console = console if console is not None else _console()
        self.quiet = quiet
        self.verbose = verbose
        self._progress = progress and not quiet and not in_ci() and self.console.is_interactive

    def error(self, message: str) -> None:
        self.console.print(f"error: {message}", style="red", markup=False)

    def warning(self, message: str) -> None:
        if not self.quiet:
            self.console.print(f"warning: {message}", style="yellow", markup=False)

    @contextmanager
    def progress(self) -> Iterator[Callable[[int, int], None]]:
        """A ``(done, total)`` callback for the engine that draws a bar when it is worth it."""
        bar: Any = None
        task: Any = None

        def advance(done: int, total: int) -> None:
            nonlocal bar, task
            if bar is None:
                if not self._progress or total <= HANDFUL:
                    return
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

                bar = Progress(
                    TextColumn("migrating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=self.console, transient=True,
                )
                bar.start()
                task = bar.add_task("migrating", total=total)
            bar.update(task, completed=done, total=total)

        try:
            yield advance
        finally:
            if bar is not None:
                bar.stop()

    def outcomes(self, plan: "Plan", mode: str) -> None:
        """One line per file that changes or failed, then every finding."""
        for outcome in plan.outcomes:
            self._outcome(outcome, mode)
        for finding in plan.findings:
            if self.quiet and finding.severity.value != "error":
                continue
            style = {"error": "red", "warning": "yellow"}.get(finding.severity.value)
            self.console.print(
                f"{finding.path}:{finding.line}:{finding.column}: {finding.severity.value} "
                f"[{finding.rule}] {finding.message}",
                style=style,
                markup=False,
            )
            if finding.fix:
                self.console.print(f"    fix: {finding.fix}", markup=False)

    def _outcome(self, outcome: "FileOutcome", mode: str) -> None:
        if outcome.status == "failed":
            self.console.print(f"{outcome.path}: error: {outcome.message}", style="red", markup=False)  # type: ignore[union-attr]
            if self.verbose and outcome.traceback:  # type: ignore[union-attr]
                self.console.print(outcome.traceback, markup=False)  # type: ignore[union-attr]
        elif self.quiet:
            return
        elif outcome.status in ("changed", "created", "deleted"):
            verb = _VERBS[mode]
            what = {"changed": verb, "created": f"{verb} (new file)", "deleted": f"{verb} (delete)"}
            self.console.print(f"{what[outcome.status]} {outcome.path} ({', '.join(outcome.rules)})", markup=False)
        elif self.verbose:
            self.console.print(f"{outcome.status} {outcome.path}", markup=False, style="dim")

    def summary(self, plan: "Plan", mode: str, smoke: Mapping[str, Any] | None = None) -> None:
        """The closing table (files, findings per rule, smoke test) and a one-line verdict."""
        if self.quiet:
            return
        from collections import Counter

        from moe_migrate.codemod.report.common import counts

        numbers = counts(plan)
        edited = "rewritten" if mode == "apply" else "to rewrite"
        headers = ("scanned", edited, "unchanged", "skipped", "failed", "findings")
        self._table(headers, ["right"] * len(headers), [[str(n) for n in numbers.values()]])
        by_rule = Counter((f.rule, f.severity.value) for f in plan.findings)
        if by_rule:
            rows = [[rule, severity, str(count)] for (rule, severity), count in sorted(by_rule.items())]
            self._table(("rule", "severity", "findings"), ("left", "left", "right"), rows)
        if smoke is not None:
            if smoke.get("cases"):
                justify = ["right" if name in ("max error", "tolerance") else "left" for name in _SMOKE_COLUMNS]
                rows = smoke_rows(smoke)
                self._table(_SMOKE_COLUMNS, justify, rows, [_SMOKE_STYLES.get(row[-1]) for row in rows])
            self.console.print(smoke_line(smoke), markup=False)
        style = "red" if numbers["failed"] else "yellow" if numbers["edited"] or numbers["findings"] else "green"
        self.console.print(verdict(plan, mode), style=style, markup=False)

    def _table(
        self,
        headers: Sequence[str],
        justify: Sequence[str],
        rows: Sequence[Sequence[str]],
        styles: Sequence[str | None] = (),
    ) -> None:
        """A table: rich's on a terminal, :func:`plain_table` elsewhere."""
        if isinstance(self.console, PlainConsole):
            self.console.print(plain_table(headers, justify, rows))
            return
        from rich import box
        from rich.table import Table

        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for name, how in zip(headers, justify):
            table.add_column(name, justify=how)  # type: ignore[arg-type]
        for row, style in zip(rows, [*styles, *[None] * (len(rows) - len(styles))]):
            table.add_row(*row, style=style)
        self.console.print(table)


def routing(config: Mapping[str, Any]) -> str:
    """A site's routing in a few words: ``sigmoid top-8/256, grouped 4/8, bias, x2.5``."""
    top_k, experts = config.get("top_k"), config.get("num_experts")
    words = [f"{config.get('scoring_func', 'softmax')} top-{top_k}/{experts}"]
    if config.get("use_grouped_topk"):
        words.append(f"grouped {config.get('topk_group')}/{config.get('num_expert_group')}")
    if config.get("e_score_correction_bias") is not None:
        words.append("bias")
    if config.get("custom_routing_function") is not None:
        words.append("custom")
    if config.get("routed_scaling_factor") not in (None, 1.0):
        words.append(f"x{config['routed_scaling_factor']}")
    if config.get("shared_experts") is not None:
        words.append("+shared")
    return ", ".join(words)


_SMOKE_COLUMNS = ("site", "routing", "max error", "tolerance", "status")
_SMOKE_STYLES = {"passed": "green", "failed": "red", "error": "red"}


def smoke_rows(smoke: Mapping[str, Any]) -> list[list[str]]:
    """One row per call site: where, routing, error against tolerance, verdict (the device and
    backend, the same for every case, are on the line below the table)."""
    rows = []
    for case in smoke["cases"]:
        error = case.get("max_error")
        rows.append([
            f"{case['path'].rsplit('/', 1)[-1]}:{case['line']}",
            routing(case.get("config") or {}),
            "-" if error is None else f"{error:.1e}",
            "-" if case.get("tolerance") is None else f"{case['tolerance']:.1e}",
            case.get("status", ""),
        ])
    return rows


def smoke_line(smoke: Mapping[str, Any]) -> str:
    """The smoke test in one line (the shape of ``SmokeReport.to_json()``)."""
    if smoke.get("skipped_reason"):
        return f"smoke test: did not run: {smoke['skipped_reason']}"
    summary = smoke.get("summary") or {}
    cases = ", ".join(f"{count} {status}" for status, count in summary.items())
    where = ", ".join(str(smoke[k]) for k in ("device", "backend") if smoke.get(k))
    return f"smoke test: {cases or 'no cases'}" + (f" ({where})" if where else "")


def verdict(plan: "Plan", mode: str) -> str:
    """``N files scanned, M rewritten, K findings`` and what to do next."""
    edits, findings, failed = len(plan.edits), len(plan.findings), len(plan.failures)
    parts = [f"{plan.scanned} files scanned", f"{edits} {'rewritten' if mode == 'apply' else 'to rewrite'}"]
    parts.append(f"{findings} finding{'s' if findings != 1 else ''}")
    if failed:
        parts.append(f"{failed} failed")
    line = ", ".join(parts)
    if edits and mode != "apply":
        line += "; run without --check/--diff to rewrite"
    return line
