"""Plugin-shaped trees: every safe rewrite applied, every unsafe construct flagged and untouched.

Each ``fixtures/plugins/<name>/`` tree has ``<name>.expected/`` (the byte-exact result of a run)
and ``<name>.findings.json`` (rule, path and line of every finding, as data). Run with
``--update-goldens`` to rewrite both from the current output, then review the git diff.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pyflakes import api as pyflakes_api
from pyflakes import messages as pyflakes_messages
from pyflakes.reporter import Reporter

from conftest import FIXTURES
from helpers import moe_migrate, tree_bytes

PLUGINS = FIXTURES / "plugins"
NAMES = sorted(p.name for p in PLUGINS.iterdir() if p.is_dir() and not p.name.endswith(".expected"))


def _report(tree: Path, *args: str) -> dict:
    result = moe_migrate("--output-format", "json", *args, str(tree))
    assert result.returncode == 1, result.stderr.decode()  # error findings remain
    return json.loads(result.stdout)


def _findings(report: dict) -> list[dict[str, object]]:
    return sorted(({k: f[k] for k in ("rule", "path", "line")} for f in report["findings"]), key=lambda f: (f["path"], f["line"], f["rule"]))


@pytest.fixture(params=NAMES)
def plugin(request, tmp_path) -> tuple[str, Path]:
    target = tmp_path / request.param
    shutil.copytree(PLUGINS / request.param, target)
    return request.param, target


def test_apply_writes_the_expected_tree_and_reports_the_expected_findings(plugin, update_goldens) -> None:
    name, tree = plugin
    before = tree_bytes(tree)
    report = _report(tree)
    expected_tree = PLUGINS / f"{name}.expected"
    findings_file = PLUGINS / f"{name}.findings.json"
    if update_goldens:
        shutil.rmtree(expected_tree, ignore_errors=True)
        shutil.copytree(tree, expected_tree)
        rows = ",\n".join(f"  {json.dumps(f)}" for f in _findings(report))
        findings_file.write_text(f"[\n{rows}\n]\n")
    assert tree_bytes(tree) == tree_bytes(expected_tree)
    assert _findings(report) == json.loads(findings_file.read_text())
    # What the tool leaves unchanged, findings or not, is byte-identical.
    after = tree_bytes(tree)
    changed = {f["path"] for f in report["files"] if f["status"] == "changed"}
    assert changed, "a plugin fixture should show at least one safe rewrite"
    assert {p for p in before if before[p] != after[p]} == changed
    flagged_only = {f["path"] for f in report["findings"]} - changed
    assert all(before[p] == after[p] for p in flagged_only)


def test_findings_do_not_depend_on_the_mode(plugin) -> None:
    name, tree = plugin
    expected = json.loads((PLUGINS / f"{name}.findings.json").read_text())
    for mode in ("--check", "--diff"):
        assert _findings(_report(tree, mode)) == expected


def test_second_run_changes_nothing_and_keeps_the_findings(plugin) -> None:
    name, tree = plugin
    moe_migrate(str(tree))
    again = _report(tree, "--check")
    assert all(f["status"] == "unchanged" for f in again["files"])
    flagged = json.loads((PLUGINS / f"{name}.findings.json").read_text())
    held = {f["path"] for f in flagged if f["rule"] not in ("moe-output-tuple", "shared-fused-moe-only-api")}
    assert held <= {f["path"] for f in again["findings"]}


@pytest.mark.parametrize("name", NAMES)
def test_no_output_file_has_an_undefined_name(name) -> None:
    undefined = []

    class Collect(Reporter):
        def __init__(self) -> None:
            super().__init__(None, None)

        def flake(self, message) -> None:
            if isinstance(message, (pyflakes_messages.UndefinedName, pyflakes_messages.UndefinedExport)):
                undefined.append(str(message))

        def syntaxError(self, filename, msg, lineno, offset, text) -> None:
            undefined.append(f"{filename}:{lineno}: {msg}")

    for path in sorted((PLUGINS / f"{name}.expected").rglob("*.py")):
        pyflakes_api.check(path.read_text(), str(path), Collect())
    assert undefined == []
