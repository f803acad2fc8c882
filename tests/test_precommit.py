"""The pre-commit hooks, run by the real pre-commit, and the dirty-tree guard around writing.

``pre-commit try-repo`` installs the hooks' environment from a git repository: here a
committed copy of this working tree (untracked files included), so the test sees exactly what
is on disk. Each try-repo builds a fresh environment (20-40 s: pip installs the project and its
dependencies from PyPI or pip's cache); later runs share one through a config file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import moe_migrate

REPO = Path(__file__).resolve().parent.parent
USES = b"from vllm.model_executor.layers.fused_moe import SharedFusedMoE\nx = SharedFusedMoE\n"
MIGRATED = b"from vllm.model_executor.layers.fused_moe import FusedMoE\nx = FusedMoE\n"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
}


def git(*args: str, cwd: Path) -> str:
    env = {**os.environ, **GIT_ENV}
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return done.stdout


def init_repo(path: Path, **files: bytes) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git("init", "-q", cwd=path)
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    if files:
        git("add", "-A", cwd=path)
        git("commit", "-qm", "init", cwd=path)
    return path


# The manifest --------------------------------------------------------------------------------


def test_manifest_declares_what_good_hooks_declare() -> None:
    hooks = {hook["id"]: hook for hook in yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())}
    assert set(hooks) == {"moe-migrate", "moe-migrate-check"}
    for hook in hooks.values():
        assert hook["language"] == "python"
        assert hook["types_or"] == ["python", "pyi"]
        assert hook["require_serial"] is True
        assert hook["minimum_pre_commit_version"] == "2.9.2"
        assert "--no-smoke" in hook["entry"].split()
        assert hook["entry"].split()[0] == "moe-migrate"
    assert {"--check", "--diff"} <= set(hooks["moe-migrate-check"]["entry"].split())
    assert "--check" not in hooks["moe-migrate"]["entry"].split()


def test_validate_manifest() -> None:
    pytest.importorskip("pre_commit")
    result = subprocess.run(
        [sys.executable, "-m", "pre_commit", "validate-manifest", str(REPO / ".pre-commit-hooks.yaml")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# try-repo with the real pre-commit -----------------------------------------------------------


@pytest.fixture(scope="module")
def hook_repo(tmp_path_factory) -> Path:
    """A committed copy of this working tree (tracked and untracked, not ignored, files)."""
    pytest.importorskip("pre_commit")
    try:
        listed = git("ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=REPO)
    except (subprocess.CalledProcessError, OSError):
        pytest.skip("needs the project as a git checkout")
    copy = tmp_path_factory.mktemp("hook-repo")
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    git("init", "-q", cwd=copy)
    git("add", "-A", cwd=copy)
    git("commit", "-qm", "hooks under test", cwd=copy)
    return copy


@pytest.fixture(scope="module")
def hook_config(hook_repo, tmp_path_factory) -> Path:
    """A config that uses both hooks from ``hook_repo``; its environment is built once."""
    rev = git("rev-parse", "HEAD", cwd=hook_repo).strip()
    hooks = [{"id": "moe-migrate"}, {"id": "moe-migrate-check"}]
    config = tmp_path_factory.mktemp("config") / ".pre-commit-config.yaml"
    config.write_text(yaml.safe_dump({"repos": [{"repo": str(hook_repo), "rev": rev, "hooks": hooks}]}))
    return config


def pre_commit(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **GIT_ENV, "PRE_COMMIT_HOME": str(home), "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", *args, "--all-files", "--color", "never"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )


def test_fix_hook_fails_fixes_then_passes(hook_repo, hook_config, tmp_path) -> None:
    target = init_repo(tmp_path / "target", **{"a.py": USES, "pkg/b.py": USES, "c.py": b"x = 1\n", "README.md": b"SharedFusedMoE\n"})
    first = pre_commit("try-repo", str(hook_repo), "moe-migrate", cwd=target, home=tmp_path / "home")
    output = first.stdout + first.stderr
    assert first.returncode == 1, output
    assert "files were modified by this hook" in output
    assert (target / "a.py").read_bytes() == MIGRATED and (target / "pkg/b.py").read_bytes() == MIGRATED
    assert (target / "README.md").read_bytes() == b"SharedFusedMoE\n"
    # The second run, through a config naming the same commit (its environment is shared
    # with the next test, where try-repo would build a new one each time).
    second = pre_commit("run", "moe-migrate", "--config", str(hook_config), cwd=target, home=hook_config.parent)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Passed" in second.stdout


def test_check_hook_fails_with_the_diff_and_writes_nothing(hook_config, tmp_path) -> None:
    target = init_repo(tmp_path / "target", **{"a.py": USES})
    result = pre_commit("run", "moe-migrate-check", "--config", str(hook_config), cwd=target, home=hook_config.parent)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "-from vllm.model_executor.layers.fused_moe import SharedFusedMoE" in output
    assert "files were modified" not in output
    assert (target / "a.py").read_bytes() == USES


# What a hook run imports ---------------------------------------------------------------------

_PROBE = """
import json, os, runpy, sys
out = sys.argv[1]
sys.argv = ["moe-migrate", *sys.argv[2:]]
code = 0
def leave(code):  # the entry point ends with os._exit: stay alive to look at what it imported
    raise SystemExit(code)
os._exit = leave
try:
    runpy.run_module("moe_migrate", run_name="__main__")
except SystemExit as exit:
    code = exit.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "triton", "numpy", "libcst", "rich"})
with open(out, "w") as handle:
    json.dump({"code": code, "heavy": heavy}, handle)
"""


@pytest.mark.parametrize(
    ("source", "code", "heavy"),
    [
        # A hook's stderr is not a terminal: plain text, no rich.
        pytest.param(b"import os\n", 0, [], id="nothing-to-migrate-imports-no-libcst-no-rich"),
        pytest.param(USES, 0, ["libcst"], id="migrating-imports-no-torch"),
    ],
)
def test_a_single_file_hook_run_never_imports_torch(tmp_path, source, code, heavy) -> None:
    (tmp_path / "a.py").write_bytes(source)
    out = tmp_path / "probe.json"
    env = {**os.environ, "PRE_COMMIT": "1", "NO_COLOR": "1"}
    done = subprocess.run([sys.executable, "-c", _PROBE, str(out), "--no-smoke", "a.py"], cwd=tmp_path, env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(out.read_text()) == {"code": code, "heavy": heavy}


def test_no_files_under_pre_commit_is_nothing_to_do() -> None:
    assert moe_migrate(env={"PRE_COMMIT": "1"}).returncode == 0
    assert moe_migrate(env={"PRE_COMMIT": ""}).returncode == 2


# The dirty-tree guard ------------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path) -> Path:
    return init_repo(tmp_path / "repo", **{"a.py": USES, "b.py": USES, "notes.py": b"x = 1\n"})


def run_apply(repo: Path, *args: str, env: dict[str, str] | None = None):
    return moe_migrate("--no-smoke", *args, str(repo), cwd=repo, env={"PRE_COMMIT": "", **(env or {})})


def test_clean_tree_is_rewritten(repo) -> None:
    (repo / "notes.py").write_bytes(b"x = 2\n")  # dirty, but not a file to rewrite
    result = run_apply(repo)
    assert result.returncode == 0, result.stderr.decode()
    assert (repo / "a.py").read_bytes() == MIGRATED


@pytest.mark.parametrize(
    ("make_dirty", "state"),
    [
        pytest.param(lambda r: (r / "a.py").write_bytes(USES + b"y = 1\n"), "modified", id="modified"),
        pytest.param(lambda r: ((r / "a.py").write_bytes(USES + b"y = 1\n"), git("add", "a.py", cwd=r)), "staged", id="staged"),
        pytest.param(lambda r: (r / "new.py").write_bytes(USES), "untracked", id="untracked"),
    ],
)
def test_dirty_files_are_not_rewritten(repo, make_dirty, state) -> None:
    make_dirty(repo)
    name = "new.py" if state == "untracked" else "a.py"
    before = {p.name: p.read_bytes() for p in repo.glob("*.py")}
    result = run_apply(repo)
    assert result.returncode == 2
    assert f"* {name} ({state})".encode() in result.stderr
    assert b"--allow-dirty" in result.stderr and b"Nothing was written" in result.stderr
    assert {p.name: p.read_bytes() for p in repo.glob("*.py")} == before, "not even the clean b.py"


@pytest.mark.parametrize(
    ("args", "env"),
    [
        pytest.param(["--allow-dirty"], {}, id="allow-dirty"),
        pytest.param([], {"PRE_COMMIT": "1"}, id="under-pre-commit"),
    ],
)
def test_dirty_guard_can_be_lifted(repo, args, env) -> None:
    (repo / "a.py").write_bytes(USES + b"y = 1\n")
    result = run_apply(repo, *args, env=env)
    assert result.returncode == 0, result.stderr.decode()
    assert (repo / "a.py").read_bytes() == MIGRATED + b"y = 1\n"


def test_dirty_guard_needs_a_work_tree(tmp_path) -> None:
    (tmp_path / "a.py").write_bytes(USES)
    assert run_apply(tmp_path).returncode == 0
    assert (tmp_path / "a.py").read_bytes() == MIGRATED


@pytest.mark.parametrize("mode", ["--check", "--diff"])
def test_dry_runs_ignore_the_guard_and_write_nothing(repo, mode) -> None:
    (repo / "a.py").write_bytes(USES + b"y = 1\n")
    result = run_apply(repo, mode)
    assert result.returncode == 1
    assert (repo / "a.py").read_bytes() == USES + b"y = 1\n"


def test_reports_name_files_from_the_repository_root(repo) -> None:
    sub = repo / "src" / "pkg"
    sub.mkdir(parents=True)
    (sub / "m.py").write_bytes(USES)
    result = moe_migrate("--check", "--output-format", "gitlab", str(repo / "src"), cwd=repo)
    [issue] = json.loads(result.stdout)
    assert issue["location"]["path"] == "src/pkg/m.py"
