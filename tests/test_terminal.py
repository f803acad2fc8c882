"""What a person sees on stderr: progress only where it helps, plain when piped, quiet when asked."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from moe_migrate.codemod.outcomes import Changed, Failed, Finding, Severity, Unchanged
from moe_migrate.codemod.run import Plan
from moe_migrate.terminal import HANDFUL, Terminal, in_ci, smoke_line, verdict

USES = b"from vllm.model_executor.layers.fused_moe import SharedFusedMoE\nx = SharedFusedMoE\n"
ANSI = re.compile(rb"\x1b\[")
COLOUR = re.compile(rb"\x1b\[[0-9;]*3[0-7]m")


def captured(terminal: bool) -> Console:
    return Console(file=StringIO(), force_terminal=terminal, force_interactive=terminal, width=100, highlight=False)


def text_of(console: Console) -> str:
    return console.file.getvalue()  # type: ignore[attr-defined]


@pytest.fixture
def not_ci(monkeypatch) -> None:
    for name in ("CI", "GITHUB_ACTIONS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def plan() -> Plan:
    finding = Finding("b.py", 2, 1, 2, 9, "shared-fused-moe-import", Severity.ERROR, "Cannot rewrite this.", "Do that.")
    note = Finding("b.py", 5, 1, 5, 9, "shared-fused-moe-reference", Severity.INFO, "Just so you know.")
    return Plan(
        Path("/repo"),
        (
            Changed("a.py", b"SharedFusedMoE\n", b"FusedMoE\n", ("shared-fused-moe-reference",)),
            Unchanged("b.py", (finding, note)),
            Failed("c.py", "parse", "syntax error at line 1, column 1: bad."),
        ),
        12,
        ("shared-fused-moe-import", "shared-fused-moe-reference"),
    )


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, False),
        ({"CI": "true"}, True),
        ({"CI": "1"}, True),
        ({"CI": "false"}, False),
        ({"CI": "0"}, False),
        ({"CI": ""}, False),
        ({"GITHUB_ACTIONS": "true"}, True),
    ],
)
def test_in_ci(environ, expected) -> None:
    assert in_ci(environ) is expected


def _drive(terminal: Terminal, total: int) -> None:
    with terminal.progress() as advance:
        for done in range(total + 1):
            advance(done, total)


def test_progress_bar_on_an_interactive_terminal(not_ci) -> None:
    console = captured(terminal=True)
    _drive(Terminal(console=console), HANDFUL + 1)
    assert "migrating" in text_of(console)


@pytest.mark.parametrize(
    ("terminal", "files", "ci", "enabled"),
    [
        pytest.param(False, 50, None, True, id="piped"),
        pytest.param(True, HANDFUL, None, True, id="a-handful"),
        pytest.param(True, 50, "true", True, id="under-ci"),
        pytest.param(True, 50, None, False, id="no-progress"),
    ],
)
def test_no_progress_bar(monkeypatch, not_ci, terminal, files, ci, enabled) -> None:
    if ci:
        monkeypatch.setenv("CI", ci)
    console = captured(terminal)
    _drive(Terminal(console=console, progress=enabled), files)
    assert text_of(console) == ""


def test_per_file_lines_findings_and_summary(plan) -> None:
    console = captured(terminal=False)
    terminal = Terminal(console=console)
    terminal.outcomes(plan, "check")
    terminal.summary(plan, "check")
    text = text_of(console)
    lines = text.splitlines()
    assert lines[0] == "would rewrite a.py (shared-fused-moe-reference)"
    assert lines[1] == "c.py: error: syntax error at line 1, column 1: bad."
    assert "b.py:2:1: error [shared-fused-moe-import] Cannot rewrite this." in text
    assert "    fix: Do that." in text
    header = next(line for line in lines if "scanned" in line).split()
    assert header == ["scanned", "to", "rewrite", "unchanged", "skipped", "failed", "findings"]
    row = lines[lines.index(next(line for line in lines if "scanned" in line)) + 2].split()
    assert row == ["12", "1", "10", "0", "1", "2"]
    assert re.search(r"shared-fused-moe-import\s+error\s+1", text)
    assert re.search(r"shared-fused-moe-reference\s+info\s+1", text)
    assert lines[-1] == "12 files scanned, 1 to rewrite, 2 findings, 1 failed; run without --check/--diff to rewrite"
    assert not ANSI.search(text.encode())


def test_quiet_prints_only_errors(plan) -> None:
    console = captured(terminal=False)
    terminal = Terminal(console=console, quiet=True)
    terminal.warning("not shown")
    terminal.outcomes(plan, "apply")
    terminal.summary(plan, "apply")
    terminal.error("shown")
    assert text_of(console).splitlines() == [
        "c.py: error: syntax error at line 1, column 1: bad.",
        "b.py:2:1: error [shared-fused-moe-import] Cannot rewrite this.",
        "    fix: Do that.",
        "error: shown",
    ]


def test_summary_shows_the_smoke_test(plan) -> None:
    console = captured(terminal=False)
    smoke = {"device": "cuda:0", "backend": "triton", "skipped_reason": None, "summary": {"passed": 4, "failed": 1, "error": 0}}
    Terminal(console=console).summary(plan, "apply", smoke)
    assert "smoke test: 4 passed, 1 failed, 0 error (cuda:0, triton)" in text_of(console)
    assert smoke_line({"skipped_reason": "torch is not installed"}) == "smoke test: did not run: torch is not installed"


def test_verdict_in_apply_mode(plan) -> None:
    assert verdict(plan, "apply") == "12 files scanned, 1 rewritten, 2 findings, 1 failed"


# Through the real entry point ---------------------------------------------------------------


def run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    environ = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "CI", "GITHUB_ACTIONS", "TERM")}
    environ.update(env)
    return subprocess.run([sys.executable, "-m", "moe_migrate", *args], cwd=tmp_path, env=environ, capture_output=True)


@pytest.fixture
def many(tmp_path) -> Path:
    for i in range(HANDFUL + 2):
        (tmp_path / f"m{i}.py").write_bytes(USES)
    return tmp_path


def test_piped_output_is_plain(many) -> None:
    result = run(many, "--check", ".")
    assert result.returncode == 1 and b"would rewrite m0.py" in result.stderr
    assert not ANSI.search(result.stderr)


def test_no_color_is_respected(many) -> None:
    forced = run(many, "--check", "-j1", ".", FORCE_COLOR="1", CI="true")
    assert COLOUR.search(forced.stderr), "FORCE_COLOR alone colours the output"
    plain = run(many, "--check", "-j1", ".", FORCE_COLOR="1", NO_COLOR="1", CI="true")
    assert b"would rewrite m0.py" in plain.stderr
    assert not COLOUR.search(plain.stderr)


def test_progress_bar_never_under_ci(many) -> None:
    # FORCE_COLOR makes rich treat stderr as an interactive terminal, as in a CI log.
    assert b"migrating" in run(many, "--check", "-j1", ".", FORCE_COLOR="1").stderr
    assert b"migrating" not in run(many, "--check", "-j1", ".", FORCE_COLOR="1", CI="true").stderr
    assert b"migrating" not in run(many, "--check", "-j1", "--no-progress", ".", FORCE_COLOR="1").stderr


@pytest.mark.parametrize(
    ("headers", "justify", "rows"),
    [
        (("scanned", "to rewrite", "unchanged", "skipped", "failed", "findings"), ["right"] * 6, [["1554", "29", "1525", "0", "0", "24"]]),
        (("rule", "severity", "findings"), ("left", "left", "right"), [["moe-output-tuple", "error", "23"], ["x", "warning", "1"]]),
        (("site", "routing", "max error", "tolerance", "status"), ("left", "left", "right", "right", "left"),
         [["deepseek_v2.py:290", "sigmoid top-8/64, +shared", "1.2e-06", "1.0e-04", "passed"], ["a.py:1", "softmax top-2/8", "-", "-", "error"]]),
    ],
)
def test_the_plain_table_is_rich_s_text(headers, justify, rows) -> None:
    from rich import box
    from rich.table import Table

    from moe_migrate.terminal import plain_table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name, how in zip(headers, justify):
        table.add_column(name, justify=how)
    for row in rows:
        table.add_row(*row)
    console = captured(terminal=False)
    console.print(table)
    assert plain_table(headers, justify, rows) + "\n" == text_of(console)


SMOKE = {
    "device": "cpu",
    "backend": "triton-interpreter",
    "skipped_reason": None,
    "summary": {"passed": 1, "error": 1},
    "cases": [
        {"path": "m/deepseek_v2.py", "line": 290, "status": "passed", "max_error": 1.2e-6, "tolerance": 1e-4,
         "config": {"num_experts": 64, "top_k": 6, "scoring_func": "softmax", "shared_experts": {}}},
        {"path": "m/llama4.py", "line": 12, "status": "error", "config": None},
    ],
}


def test_off_a_terminal_the_report_is_the_same_text_without_rich(plan) -> None:
    from moe_migrate.terminal import PlainConsole

    rich_console, plain = captured(terminal=False), PlainConsole(StringIO())
    for console in (rich_console, plain):
        Terminal(console=console).outcomes(plan, "check")
        Terminal(console=console).summary(plan, "check", SMOKE)
    assert plain.file.getvalue() == text_of(rich_console)  # type: ignore[attr-defined]
