"""The command line: options -> engine -> exit code. The only module that knows the terminal.

stdout carries only the payload (diffs, JSON); everything a person reads goes to one rich
console on stderr, plain when stderr is not a terminal.
"""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from moe_migrate import __version__

if TYPE_CHECKING:
    from rich.console import Console

    from moe_migrate.codemod.run import Plan


class ExitCode(enum.IntEnum):
    """The contract with CI and pre-commit (README, "Exit codes")."""

    CLEAN = 0
    #: --check/--diff found changes, or a finding needs a human, or the smoke test mismatched.
    CHANGES = 1
    #: Usage error, unreadable or unparsable file, rule crash.
    ERROR = 2


class OutputFormat(str, enum.Enum):
    text = "text"
    json = "json"


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def _console(quiet: bool = False) -> "Console":
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True, quiet=quiet)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"moe-migrate {__version__}")
        raise typer.Exit()


def _split(values: Optional[List[str]]) -> list[str]:
    """Repeatable options that also take comma-separated lists."""
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


@app.command(context_settings={"help_option_names": ["-h", "--help"]})
def migrate(
    paths: List[Path] = typer.Argument(None, help="Files and directories to migrate.", show_default=False),
    check: bool = typer.Option(False, "--check", help="Write nothing; exit 1 if anything would change or a finding needs a human."),
    diff: bool = typer.Option(False, "--diff", help="Write nothing; print a unified diff of every change on stdout."),
    select: Optional[List[str]] = typer.Option(None, "--select", metavar="ID", help="Run only these rules (repeatable, or comma-separated)."),
    ignore: Optional[List[str]] = typer.Option(None, "--ignore", metavar="ID", help="Do not run these rules."),
    exclude: Optional[List[str]] = typer.Option(None, "--exclude", metavar="GLOB", help="Skip matching paths, explicit files included (repeatable)."),
    jobs: int = typer.Option(0, "-j", "--jobs", min=0, help="Worker processes; 0 = one per CPU, 1 = serial."),
    output_format: OutputFormat = typer.Option(OutputFormat.text, "--output-format", help="stdout format: text (diffs with --diff) or json (the report)."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Print only errors."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Also list unchanged files and tracebacks."),
    list_rules: bool = typer.Option(False, "--list-rules", help="List the rules and exit."),
    explain: Optional[str] = typer.Option(None, "--explain", metavar="ID", help="Show a rule's documentation and examples, and exit."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    """Migrate vLLM-based code off the removed SharedFusedMoE class.

    Rewrites every use of vLLM's SharedFusedMoE into FusedMoE in PATHS, and reports what it
    cannot rewrite safely. Exit codes: 0 clean, 1 changes or findings (with --check/--diff)
    or findings that need a human, 2 usage or file errors.
    """
    console = _console(quiet)
    if list_rules:
        raise typer.Exit(_list_rules())
    if explain is not None:
        raise typer.Exit(_explain(explain, console))
    if not paths:
        console.print("error: no paths given. Try: moe-migrate --diff PATH", style="red")
        raise typer.Exit(ExitCode.ERROR)
    from moe_migrate import rules
    from moe_migrate.codemod.discover import DiscoveryError
    from moe_migrate.codemod.run import build_plan

    try:
        rule_ids, warnings = rules.select(_split(select), _split(ignore))
        plan = build_plan(paths, rule_ids, excludes=_split(exclude), jobs=jobs or None)
    except (rules.UnknownRule, DiscoveryError) as error:
        console.print(f"error: {error}", style="red")
        raise typer.Exit(ExitCode.ERROR)
    for warning in warnings:
        console.print(f"warning: {warning}", style="yellow")
    mode = "diff" if diff else "check" if check else "apply"
    if mode == "apply":
        plan = _write(plan)
    _emit(plan, mode, output_format, console, verbose)
    raise typer.Exit(exit_code(plan, mode))


def exit_code(plan: "Plan", mode: str) -> ExitCode:
    """0/1/2 from a Plan. ``--diff`` is an output option: it never lowers the code."""
    from moe_migrate.codemod.outcomes import Severity

    if plan.failures:
        return ExitCode.ERROR
    if any(f.severity is not Severity.INFO for f in plan.findings):
        return ExitCode.CHANGES
    if mode != "apply" and plan.edits:
        return ExitCode.CHANGES
    return ExitCode.CLEAN


def _write(plan: "Plan") -> "Plan":
    from dataclasses import replace

    from moe_migrate.codemod.write import apply_outcome

    written = tuple(apply_outcome(o, plan.root) for o in plan.outcomes)
    return replace(plan, outcomes=written)


def _emit(plan: "Plan", mode: str, output_format: OutputFormat, console: "Console", verbose: bool) -> None:
    from moe_migrate.codemod.outcomes import Failed
    from moe_migrate.codemod.report.diff import unified_diff

    if output_format is OutputFormat.json:
        from moe_migrate.codemod.report.json import render

        sys.stdout.write(render(plan, mode))
    elif mode == "diff":
        out = sys.stdout.buffer
        for outcome in plan.edits:
            out.write(unified_diff(outcome))
        out.flush()
    verb = {"apply": "rewrote", "check": "would rewrite", "diff": "would rewrite"}[mode]
    for outcome in plan.outcomes:
        if isinstance(outcome, Failed):
            console.print(f"{outcome.path}: error: {outcome.message}", style="red", markup=False)
            if verbose and outcome.traceback:
                console.print(outcome.traceback, markup=False)
        elif outcome.status in ("changed", "created", "deleted"):
            what = {"changed": verb, "created": f"{verb} (new file)", "deleted": f"{verb} (delete)"}
            console.print(f"{what[outcome.status]} {outcome.path} ({', '.join(outcome.rules)})", markup=False)
        elif verbose:
            console.print(f"unchanged {outcome.path}", markup=False, style="dim")
    for finding in plan.findings:
        style = {"error": "red", "warning": "yellow"}.get(finding.severity.value)
        console.print(
            f"{finding.path}:{finding.line}:{finding.column}: {finding.severity.value} "
            f"[{finding.rule}] {finding.message}",
            style=style,
            markup=False,
        )
        if finding.fix:
            console.print(f"    fix: {finding.fix}", markup=False)
    console.print(_summary(plan, mode), markup=False)


def _summary(plan: "Plan", mode: str) -> str:
    counts = {status: 0 for status in ("changed", "created", "deleted", "failed")}
    for outcome in plan.outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    edits = counts["changed"] + counts["created"] + counts["deleted"]
    verb = "rewritten" if mode == "apply" else "to rewrite"
    parts = [f"{plan.scanned} files scanned", f"{edits} {verb}"]
    findings = len(plan.findings)
    parts.append(f"{findings} finding{'s' if findings != 1 else ''}")
    if counts["failed"]:
        parts.append(f"{counts['failed']} failed")
    return ", ".join(parts)


def _list_rules() -> ExitCode:
    from moe_migrate import rules
    from moe_migrate.codemod.rule import rule_summary

    for rule_id in rules.RULE_IDS:
        typer.echo(f"{rule_id:32} {rule_summary(rules.load(rule_id))}")
    return ExitCode.CLEAN


def _explain(rule_id: str, console: "Console") -> ExitCode:
    from moe_migrate import rules
    from moe_migrate.codemod.testing import explain_text

    try:
        rule = rules.load(rule_id)
    except rules.UnknownRule as error:
        console.print(f"error: {error}", style="red")
        return ExitCode.ERROR
    typer.echo(explain_text(rule))
    return ExitCode.CLEAN


def main() -> None:
    app(prog_name="moe-migrate")
