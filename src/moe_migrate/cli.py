"""The command line: options -> engine -> exit code.

stdout carries only the payload (diffs, reports); everything a person reads goes to one rich
console on stderr (:mod:`moe_migrate.terminal`, which only this module uses), plain when
stderr is not a terminal. Heavy modules (rich, LibCST, the renderers) are imported where they
are needed: pre-commit starts this on every commit.
"""

from __future__ import annotations

import enum
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Mapping, Optional

import typer

from moe_migrate import __version__

if TYPE_CHECKING:
    from rich.console import Console

    from moe_migrate.codemod.run import Plan
    from moe_migrate.terminal import Terminal


class ExitCode(enum.IntEnum):
    """The contract with CI and pre-commit (README, "Exit codes")."""

    CLEAN = 0
    #: --check/--diff found changes, or a finding needs a human, or the smoke test mismatched.
    CHANGES = 1
    #: Usage error, unreadable or unparsable file, rule crash.
    ERROR = 2
    #: Stopped by Ctrl-C (SIGINT); 143 for SIGTERM. Every file is either untouched or rewritten.
    INTERRUPTED = 130


class OutputFormat(str, enum.Enum):
    text = "text"
    json = "json"
    markdown = "markdown"
    sarif = "sarif"
    github = "github"
    gitlab = "gitlab"

#: ``--report`` formats (those of :data:`moe_migrate.codemod.report.common.FORMATS`).
REPORT_FORMATS = tuple(f.value for f in OutputFormat if f is not OutputFormat.text)


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"moe-migrate {__version__}")
        raise typer.Exit()


def _reports(values: Optional[List[str]]) -> list[tuple[str, Optional[Path]]]:
    """``--report FORMAT=PATH`` values; ``markdown`` alone means ``$GITHUB_STEP_SUMMARY``."""
    parsed = []
    for value in values or []:
        fmt, sep, path = value.partition("=")
        if fmt not in REPORT_FORMATS:
            raise typer.BadParameter(f"unknown format {fmt!r} in {value!r}; choose from {', '.join(REPORT_FORMATS)}")
        if not path and fmt != "markdown":
            raise typer.BadParameter(f"{fmt} needs a file: --report {fmt}=PATH")
        parsed.append((fmt, Path(path) if path else None))
    return parsed


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
    output_format: OutputFormat = typer.Option(OutputFormat.text, "--output-format", help="What goes to stdout: text (diffs with --diff), or a report: json, markdown, sarif, github (workflow commands), gitlab (Code Quality)."),
    report: Optional[List[str]] = typer.Option(None, "--report", metavar="FORMAT=PATH", callback=_reports, help="Also write a report to PATH (repeatable); FORMAT is json, markdown, sarif, github or gitlab. A bare 'markdown' appends to $GITHUB_STEP_SUMMARY."),
    allow_dirty: bool = typer.Option(False, "--allow-dirty", help="Rewrite files even if they have uncommitted changes in git."),
    smoke: Optional[bool] = typer.Option(None, "--smoke/--no-smoke", help="Require, or skip, the smoke test of the migrated tree (default: after a rewrite, when torch and triton are installed). With --check/--diff, --smoke tests the proposed sources in memory. The pre-commit hooks pass --no-smoke."),
    smoke_only: bool = typer.Option(False, "--smoke-only", help="Only run the smoke test, on the tree as it is; rewrite nothing."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Never draw a progress bar (it shows only on a terminal, never under CI)."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Print only errors."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Also list unchanged files and tracebacks."),
    list_rules: bool = typer.Option(False, "--list-rules", help="List the rules and exit."),
    explain: Optional[str] = typer.Option(None, "--explain", metavar="ID", help="Show a rule's documentation and examples, and exit."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    """Migrate vLLM-based code off the removed SharedFusedMoE class.

    Rewrites every use of vLLM's SharedFusedMoE into FusedMoE in PATHS, reports what it cannot rewrite safely, then smoke-tests each migrated FusedMoE call site.

    Exit codes: 0 clean; 1 changes (with --check/--diff), findings that need a human, or a smoke-test mismatch; 2 usage or file errors.
    """  # noqa: E501 - typer shows each line of this docstring as a line of --help
    from moe_migrate.terminal import Terminal

    terminal = Terminal(quiet=quiet, verbose=verbose, progress=not no_progress)
    console = terminal.console
    if list_rules:
        raise typer.Exit(_list_rules())
    if explain is not None:
        raise typer.Exit(_explain(explain, console))
    if not paths:
        if os.environ.get("PRE_COMMIT"):
            raise typer.Exit(ExitCode.CLEAN)  # a hook with always_run and no files: nothing to do
        console.print("error: no paths given. Try: moe-migrate --diff PATH", style="red")
        raise typer.Exit(ExitCode.ERROR)
    from moe_migrate import rules
    from moe_migrate.codemod.discover import DiscoveryError
    from moe_migrate.codemod.run import build_plan

    try:
        rule_ids, warnings = ([], []) if smoke_only else rules.select(_split(select), _split(ignore))
        with terminal.progress() as progress:
            plan = build_plan(paths, rule_ids, excludes=_split(exclude), jobs=jobs or None, progress=progress)
    except (rules.UnknownRule, DiscoveryError) as error:
        console.print(f"error: {error}", style="red")
        raise typer.Exit(ExitCode.ERROR)
    except KeyboardInterrupt:
        terminal.error("interrupted while analysing; nothing was written")
        raise typer.Exit(ExitCode.INTERRUPTED)
    for warning in warnings:
        terminal.warning(warning)
    if not plan.scanned:
        terminal.warning("no Python files in the paths given (all excluded, ignored by git, or not .py/.pyi)")
    mode = "diff" if diff else "check" if check or smoke_only else "apply"
    if mode == "apply":
        _refuse_dirty(plan, allow_dirty, terminal)
        plan = _write(plan, terminal)
    try:
        plan, smoke_report, smoke_code = _smoke(plan, mode, True if smoke_only else smoke, terminal)
    except KeyboardInterrupt:
        terminal.outcomes(plan, mode)
        terminal.error("interrupted during the smoke test (the files above were written in full)")
        raise typer.Exit(ExitCode.INTERRUPTED)
    emitted = _emit(plan, mode, output_format, report or [], terminal, smoke_report)
    raise typer.Exit(max(exit_code(plan, mode), emitted, smoke_code))


def _smoke(
    plan: "Plan", mode: str, requested: Optional[bool], terminal: "Terminal"
) -> tuple["Plan", Optional[Mapping[str, Any]], ExitCode]:
    """Run the smoke test on the Plan's proposed sources when asked, or by default after a rewrite.

    ``requested``: True requires it (exit 2 if it cannot run), False skips it, None runs it
    after a rewrite that changed something, when torch and triton are installed.
    """
    if requested is False or (requested is None and (mode != "apply" or not plan.edits)):
        return plan, None, ExitCode.CLEAN
    from dataclasses import replace

    from moe_migrate.smoke.harness import run_smoke, smoke_available

    missing = smoke_available()
    if missing is not None:
        if requested:
            terminal.error(f"the smoke test cannot run: {missing}. Install the extra: pip install 'moe-migrate[smoke]'")
            return plan, None, ExitCode.ERROR
        terminal.warning(f"smoke test skipped: {missing} (pip install 'moe-migrate[smoke]' to run it)")
        return plan, None, ExitCode.CLEAN
    result = run_smoke(plan.sources(b"FusedMoE"), plan.root)
    plan = replace(plan, extra_findings=(*plan.extra_findings, *result.findings))
    if result.skipped_reason is not None:
        terminal.error(f"the smoke test could not run: {result.skipped_reason}")
        return plan, result.to_json(), ExitCode.ERROR if requested else ExitCode.CLEAN
    return plan, result.to_json(), ExitCode.CLEAN if result.ok else ExitCode.CHANGES


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


def _write(plan: "Plan", terminal: "Terminal") -> "Plan":
    """Write the Plan; on Ctrl-C/SIGTERM, finish the file in flight, say what was written, exit."""
    if not plan.edits:
        return plan  # the usual pre-commit run: nothing to write, nothing more to import
    from dataclasses import replace

    from moe_migrate.codemod.write import write_plan

    written = write_plan(plan.outcomes, plan.root)
    plan = replace(plan, outcomes=written.outcomes)
    if written.signal is None:
        return plan
    left = {id(o) for o in written.not_reached}
    done = replace(plan, outcomes=tuple(o for o in written.outcomes if id(o) not in left))
    terminal.outcomes(done, "apply")
    count = sum(o.status in ("changed", "created", "deleted") for o in done.outcomes)
    terminal.error(
        f"interrupted: {count} file{'s' if count != 1 else ''} rewritten (listed above), "
        f"{len(left)} not written and left exactly as they were. Run again to finish."
    )
    raise typer.Exit(128 + written.signal)


def _refuse_dirty(plan: "Plan", allow_dirty: bool, terminal: "Terminal") -> None:
    """Exit 2 rather than rewrite a file whose last state git does not hold (``cargo fix``).

    Not under pre-commit (``PRE_COMMIT`` set): it stashes unstaged changes itself.
    """
    if allow_dirty or os.environ.get("PRE_COMMIT") or not plan.edits:
        return
    from moe_migrate.codemod.git import GitError, uncommitted

    targets = {os.path.realpath(plan.root / o.path): o.path for o in plan.edits if o.status != "created"}
    try:
        dirty = uncommitted([Path(p) for p in targets])
    except GitError as error:
        terminal.error(f"{error}. Cannot tell which files have uncommitted changes; pass --allow-dirty to rewrite anyway.")
        raise typer.Exit(ExitCode.ERROR)
    if dirty:
        listing = "\n".join(f"  * {targets[str(path)]} ({state})" for path, state in dirty)
        terminal.error(
            f"{'a file' if len(dirty) == 1 else f'{len(dirty)} files'} to rewrite {'has' if len(dirty) == 1 else 'have'} "
            f"uncommitted changes, and moe-migrate rewrites files in place:\n{listing}\n"
            "Commit or stash first, or pass --allow-dirty to rewrite anyway. Nothing was written."
        )
        raise typer.Exit(ExitCode.ERROR)


def _emit(
    plan: "Plan",
    mode: str,
    output_format: OutputFormat,
    reports: list[tuple[str, Optional[Path]]],
    terminal: "Terminal",
    smoke: Optional[Mapping[str, Any]] = None,
) -> ExitCode:
    """The payload on stdout, the reports to their files, the person's view on stderr.

    ``smoke`` is the smoke test's ``to_json()``, when it ran. Returns ERROR if a report
    could not be written.
    """
    if output_format is not OutputFormat.text:
        sys.stdout.write(_render(output_format.value, plan, mode, smoke))
        sys.stdout.flush()
    elif mode == "diff":
        from moe_migrate.codemod.report.diff import unified_diff

        out = sys.stdout.buffer
        for outcome in plan.edits:
            out.write(unified_diff(outcome))
        out.flush()
    terminal.outcomes(plan, mode)
    code = ExitCode.CLEAN
    for fmt, path in reports:
        if not _write_report(fmt, path, plan, mode, smoke, terminal):
            code = ExitCode.ERROR
    terminal.summary(plan, mode, smoke)
    return code


def _render(fmt: str, plan: "Plan", mode: str, smoke: Optional[Mapping[str, Any]], limit: Optional[int] = None) -> str:
    from moe_migrate.codemod.report.common import Links, render

    links = Links() if fmt == "json" else Links.discover(plan.root)
    return render(fmt, plan, mode, links=links, smoke=smoke, limit=limit)


def _write_report(
    fmt: str, path: Optional[Path], plan: "Plan", mode: str, smoke: Optional[Mapping[str, Any]], terminal: "Terminal"
) -> bool:
    """Write one ``--report``; a bare ``markdown`` appends to ``$GITHUB_STEP_SUMMARY``."""
    limit = None
    if path is None:
        from moe_migrate.codemod.report.markdown import LIMIT

        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if not summary:
            terminal.warning("--report markdown without a path writes to $GITHUB_STEP_SUMMARY, which is not set; no summary written")
            return True
        path = Path(summary)
        # The 1 MiB limit is per step: leave room for what earlier commands appended.
        limit = LIMIT - (path.stat().st_size if path.exists() else 0)
    try:
        with open(path, "a" if limit is not None else "w", encoding="utf-8", newline="\n") as handle:
            handle.write(_render(fmt, plan, mode, smoke, limit))
    except OSError as error:
        terminal.error(f"cannot write the {fmt} report to {path}: {error.strerror or error}")
        return False
    return True


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
    """The console entry point: run, then end the process without tearing Python down.

    By the time the command returns, every file it wrote is closed and its reports are
    written; what remains of an orderly exit is freeing LibCST's modules and nodes object by
    object, about 30 ms of a 350 ms pre-commit run. So once stdout and stderr are flushed, the
    process leaves with ``os._exit``, and atexit handlers do not run. An exception other than
    ``SystemExit`` still unwinds the normal way.
    """
    try:
        app(prog_name="moe-migrate")
        code: object = 0
    except SystemExit as done:
        code = done.code
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)  # what sys.exit("message") would have printed
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a reader that went away (`| head`): nothing left to tell it
        pass
    os._exit(code or 0)
