"""The command line contract: exit codes, streams, reports."""

from __future__ import annotations

import json

import pytest

from helpers import moe_migrate

USES = b"from vllm.model_executor.layers.fused_moe import SharedFusedMoE\nx = SharedFusedMoE\n"
MIGRATED = b"from vllm.model_executor.layers.fused_moe import FusedMoE\nx = FusedMoE\n"
FLAGGED = b"import vllm.model_executor.layers.fused_moe.shared_fused_moe as m\nf = m.helper\n"


@pytest.fixture
def tree(tmp_path):
    def make(**files: bytes):
        for name, data in files.items():
            (tmp_path / f"{name}.py").write_bytes(data)
        return tmp_path

    return make


# mode, files, exit code, files written?
MATRIX = [
    pytest.param([], {"a": MIGRATED}, 0, False, id="apply-clean"),
    pytest.param([], {"a": USES}, 0, True, id="apply-rewrites"),
    pytest.param(["--check"], {"a": MIGRATED}, 0, False, id="check-clean"),
    pytest.param(["--check"], {"a": USES}, 1, False, id="check-changes"),
    pytest.param(["--diff"], {"a": MIGRATED}, 0, False, id="diff-clean"),
    pytest.param(["--diff"], {"a": USES}, 1, False, id="diff-changes"),
    pytest.param([], {"a": FLAGGED}, 1, False, id="apply-finding"),
    pytest.param(["--diff"], {"a": FLAGGED}, 1, False, id="diff-finding-no-rewrite"),
    pytest.param([], {"a": USES, "b": b"SharedFusedMoE(\n"}, 2, True, id="apply-parse-error"),
    pytest.param(["--check"], {"a": b"def (SharedFusedMoE\n"}, 2, False, id="check-parse-error"),
]


@pytest.mark.parametrize(("args", "files", "code", "writes"), MATRIX)
def test_exit_code_matrix(tree, args, files, code, writes) -> None:
    root = tree(**files)
    result = moe_migrate(*args, str(root))
    assert result.returncode == code, result.stderr.decode()
    written = (root / "a.py").read_bytes() != files["a"]
    assert written == writes


def test_stdout_carries_only_the_payload(tree) -> None:
    root = tree(a=USES)
    result = moe_migrate("--diff", str(root))
    assert result.stdout.startswith(b"--- a/a.py\n+++ b/a.py\n")
    assert b"would rewrite a.py" in result.stderr
    quiet = moe_migrate("--check", "--quiet", str(root))
    assert quiet.returncode == 1 and quiet.stdout == b"" and quiet.stderr == b""


def test_everything_is_out_before_the_process_ends(tree) -> None:
    # The entry point skips Python's teardown (os._exit): what it printed must all arrive,
    # far more than a pipe holds, on both streams, and a report file must be complete.
    root = tree(**{f"m{i:03}": USES + b"# " + b"x" * 2000 + b"\n" for i in range(300)})
    result = moe_migrate("--diff", "--report", f"json={root / 'report.json'}", str(root))
    assert result.returncode == 1
    assert result.stdout.count(b"\n+++ b/m") == 300 and b"+++ b/m299.py" in result.stdout[-2500:]
    assert result.stderr.count(b"would rewrite m") == 300 and b"300 to rewrite" in result.stderr
    assert len(json.loads((root / "report.json").read_text())["files"]) == 300


def test_json_report_shape(tree) -> None:
    root = tree(a=USES, b=FLAGGED, c=b"x = 1\n")
    result = moe_migrate("--check", "--output-format", "json", str(root))
    report = json.loads(result.stdout)
    assert report["schema"] == "moe-migrate/report/v1"
    assert report["tool"]["name"] == "moe-migrate" and report["mode"] == "check"
    assert [f["path"] for f in report["files"]] == ["a.py", "b.py"]
    changed = report["files"][0]
    assert changed["status"] == "changed" and changed["diff"].startswith("--- a/a.py")
    assert set(changed) == {"path", "status", "rules", "diff", "error"}
    [finding] = report["findings"]
    assert finding["rule"] == "shared-fused-moe-import" and finding["line"] == 1
    assert set(finding) == {"rule", "path", "line", "column", "end_line", "end_column", "severity", "message", "fix"}
    assert report["smoke"] is None
    assert report["summary"]["scanned"] == 3 and report["summary"]["changed"] == 1
    assert result.returncode == 1


def test_exclude_applies_to_explicit_files(tree) -> None:
    root = tree(a=USES)
    result = moe_migrate("--check", "--exclude", "a.py", str(root / "a.py"), env={}, cwd=root)
    assert result.returncode == 0
    assert (root / "a.py").read_bytes() == USES


def test_select_and_ignore(tree) -> None:
    root = tree(a=USES)
    ignored = moe_migrate("--check", "--ignore", "shared-fused-moe-import", str(root))
    assert ignored.returncode == 0 and b"is not run" in ignored.stderr
    unknown = moe_migrate("--select", "nope", str(root))
    assert unknown.returncode == 2 and b"unknown rule" in unknown.stderr


def test_usage_errors_exit_2(tmp_path) -> None:
    assert moe_migrate(str(tmp_path / "missing")).returncode == 2
    assert moe_migrate().returncode == 2
    assert moe_migrate("--no-such-flag", str(tmp_path)).returncode == 2
    assert moe_migrate("--explain", "nope").returncode == 2


def test_version_list_and_explain() -> None:
    assert moe_migrate("--version").stdout.startswith(b"moe-migrate ")
    listing = moe_migrate("--list-rules").stdout.decode()
    assert "shared-fused-moe-import" in listing and "shared-fused-moe-reference" in listing
    explained = moe_migrate("--explain", "shared-fused-moe-reference").stdout.decode()
    assert "Fix safety" in explained and "+experts = FusedMoE(" in explained


def test_file_given_twice_is_migrated_once(tree) -> None:
    root = tree(a=USES)
    result = moe_migrate(str(root / "a.py"), str(root / "a.py"), cwd=root)
    assert result.returncode == 0
    assert (root / "a.py").read_bytes() == MIGRATED
    assert result.stderr.count(b"rewrote a.py") == 1
