"""What moe-migrate guarantees about the user's files, under faults, crashes and signals.

- A write that fails at any point (disk full, permission, I/O error, Ctrl-C) leaves the
  original intact and no temporary file behind.
- Owner, group and mode are kept; output that does not parse is never written.
- A worker process that dies costs only the file it was migrating.
- Ctrl-C/SIGTERM stop the run promptly, with every file either untouched or fully rewritten;
  even SIGKILL leaves no partial file.
- Bad arguments get clear messages and the documented exit codes.
"""

from __future__ import annotations

import ctypes
import errno
import faulthandler
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import libcst as cst
import pytest

from conftest import FIXTURES
from helpers import moe_migrate, tree_bytes
from moe_migrate import rules
from moe_migrate.codemod import run as run_module
from moe_migrate.codemod import write as write_module
from moe_migrate.codemod.context import FileContext
from moe_migrate.codemod.outcomes import Changed, Failed
from moe_migrate.codemod.pool import map_resilient
from moe_migrate.codemod.rule import Rule
from moe_migrate.codemod.run import build_plan
from moe_migrate.codemod.transform import migrate_source
from moe_migrate.codemod.write import TEMP_SUFFIX, apply_outcome, write_atomic, write_plan

USES = b"from vllm.model_executor.layers.fused_moe import SharedFusedMoE\nx = SharedFusedMoE\n"
MIGRATED = b"from vllm.model_executor.layers.fused_moe import FusedMoE\nx = FusedMoE\n"
RULE_IDS = list(rules.RULE_IDS)
ROOT = os.geteuid() == 0


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(TEMP_SUFFIX)]


def changed(path: Path) -> Changed:
    return Changed(path.name, USES, MIGRATED, ("shared-fused-moe-import",))


# --- writes ------------------------------------------------------------------------------


@pytest.fixture(params=["O_TMPFILE", "named temporary file"])
def temp_kind(request, monkeypatch, tmp_path):
    """Run a test with both ways of making the temporary file."""
    if request.param != "O_TMPFILE":
        monkeypatch.setattr(write_module, "_NO_TMPFILE", {str(tmp_path)})
    return request.param


def test_write_keeps_mode_and_owner(tmp_path: Path, temp_kind: str) -> None:
    path = tmp_path / "a.py"
    path.write_bytes(USES)
    if ROOT:
        os.chown(path, 1234, 5678)
    path.chmod(0o4751)  # after chown, which clears set-user-ID
    before = path.stat()
    assert apply_outcome(changed(path), tmp_path) == changed(path)
    after = path.stat()
    assert path.read_bytes() == MIGRATED
    assert (after.st_mode, after.st_uid, after.st_gid) == (before.st_mode, before.st_uid, before.st_gid)
    assert after.st_ino != before.st_ino, "replaced by rename, not rewritten in place"
    assert not leftovers(tmp_path)


def test_new_files_get_the_usual_mode(tmp_path: Path) -> None:
    from moe_migrate.codemod.outcomes import Created

    mask = os.umask(0o022)
    try:
        apply_outcome(Created("new.py", MIGRATED, ("r",)), tmp_path)
    finally:
        os.umask(mask)
    assert (tmp_path / "new.py").stat().st_mode & 0o777 == 0o644


def test_an_owner_that_cannot_be_kept_is_refused(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "a.py"
    path.write_bytes(USES)
    like = os.stat_result((path.stat().st_mode, 0, 0, 0, 4321, 4321, 0, 0, 0, 0))

    def refuse(*args):  # type: ignore[no-untyped-def]
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "fchown", refuse)
    with pytest.raises(OSError, match="cannot keep its owner"):
        write_atomic(path, MIGRATED, like=like)
    assert path.read_bytes() == USES and not leftovers(tmp_path)
    if ROOT:  # the same through apply_outcome, on a file really owned by someone else
        os.chown(path, 4321, 4321)
        outcome = apply_outcome(changed(path), tmp_path)
        assert isinstance(outcome, Failed) and "cannot keep its owner" in outcome.message
        assert path.read_bytes() == USES


def _fail_halfway(fd: int, data) -> int:  # type: ignore[no-untyped-def]
    os.write.__wrapped__(fd, bytes(data[: len(data) // 2]))  # type: ignore[attr-defined]
    raise OSError(errno.ENOSPC, "No space left on device")


FAULTS = {
    # name: (what to patch on the os module, replacement, message in the refusal)
    "disk full halfway": ("write", _fail_halfway, "No space left on device"),
    "fsync fails": ("fsync", OSError(errno.EIO, "Input/output error"), "Input/output error"),
    "chmod fails": ("fchmod", OSError(errno.EPERM, "Operation not permitted"), "not permitted"),
    "rename fails": ("replace", OSError(errno.EACCES, "Permission denied"), "Permission denied"),
    "directory not writable": ("open", OSError(errno.EACCES, "Permission denied"), "Permission denied"),
    "ctrl-c mid-write": ("fsync", KeyboardInterrupt(), None),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_failed_write_leaves_the_original_intact(tmp_path: Path, monkeypatch, temp_kind: str, fault: str) -> None:
    name, effect, message = FAULTS[fault]
    path = tmp_path / "a.py"
    path.write_bytes(USES)
    real = getattr(os, name)

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        if name == "open" and not (args[1] & (os.O_WRONLY | getattr(os, "O_TMPFILE", 0) | os.O_CREAT)):
            return real(*args, **kwargs)  # reads still work; only creating the temporary file fails
        if callable(effect):
            return effect(*args, **kwargs)
        raise effect

    broken.__wrapped__ = real  # type: ignore[attr-defined]
    monkeypatch.setattr(os, name, broken)
    if message is None:
        with pytest.raises(KeyboardInterrupt):
            apply_outcome(changed(path), tmp_path)
    else:
        outcome = apply_outcome(changed(path), tmp_path)
        assert isinstance(outcome, Failed) and outcome.stage == "write"
        assert message in outcome.message and "unchanged" in outcome.message
    monkeypatch.undo()
    assert path.read_bytes() == USES
    assert not leftovers(tmp_path)


def test_output_that_does_not_parse_is_not_written(tmp_path: Path) -> None:
    path = tmp_path / "a.py"
    path.write_bytes(USES)
    outcome = apply_outcome(Changed("a.py", USES, b"from x import (\n", ("r",)), tmp_path)
    assert isinstance(outcome, Failed) and "would not parse" in outcome.message
    assert path.read_bytes() == USES


class BreaksTheCode(Rule):
    """Renames ``x`` to a keyword. Why: tests. Fix safety: none."""

    ID = "breaks-the-code"

    def visit_Name(self, node: cst.Name) -> None:
        if node.value == "x":
            self.replace(node, cst.Name("lambda"))


def test_migrate_source_refuses_a_rewrite_that_does_not_parse() -> None:
    outcome = migrate_source(b"x = 1\n", [BreaksTheCode], FileContext("a.py"))
    assert isinstance(outcome, Failed) and outcome.stage == "rule"
    assert "does not parse" in outcome.message


def test_a_hard_link_is_replaced_not_written_through(tmp_path: Path) -> None:
    path = tmp_path / "a.py"
    path.write_bytes(USES)
    os.link(path, tmp_path / "other_name")
    apply_outcome(changed(path), tmp_path)
    assert path.read_bytes() == MIGRATED
    assert (tmp_path / "other_name").read_bytes() == USES  # e.g. a package manager's cache


def test_unreadable_file_is_reported(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "a.py").write_bytes(USES)
    (tmp_path / "b.py").write_bytes(USES)
    if ROOT:  # root reads a 0o000 file: refuse the read where the engine makes it
        real = os.open

        def refuse(path, *args, **kwargs):  # type: ignore[no-untyped-def]
            if str(path).endswith("a.py"):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", refuse)
    else:
        (tmp_path / "a.py").chmod(0)
    plan = build_plan([tmp_path], RULE_IDS, jobs=1)
    a, b = plan.outcomes
    assert isinstance(a, Failed) and a.stage == "read" and a.message == "cannot read: permission denied"
    assert isinstance(b, Changed)


@pytest.mark.skipif(ROOT, reason="root can read a 0o000 file; test_unreadable_file_is_reported covers root")
def test_unreadable_file_through_the_cli(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_bytes(USES)
    (tmp_path / "a.py").chmod(0)
    result = moe_migrate("--no-smoke", str(tmp_path))
    assert result.returncode == 2 and b"a.py: error: cannot read: permission denied" in result.stderr


# --- the process pool -------------------------------------------------------------------

_REAL_MIGRATE = run_module._migrate


def _dying_migrate(candidate):  # type: ignore[no-untyped-def]
    name = candidate.context.path
    if name == "exits.py":
        os._exit(3)
    if name == "segfaults.py":
        faulthandler.disable()  # pytest's would print the crash; the pool must cope silently
        ctypes.string_at(0)
    if name == "oom.py":
        os.kill(os.getpid(), signal.SIGKILL)
    return _REAL_MIGRATE(candidate)


def test_a_dying_worker_costs_only_its_file(tmp_path: Path, monkeypatch) -> None:
    dying = {"exits.py": "exited with status 3", "segfaults.py": "SIGSEGV", "oom.py": "SIGKILL"}
    for name in [*dying, *(f"ok{i}.py" for i in range(7))]:
        (tmp_path / name).write_bytes(USES)
    monkeypatch.setattr(run_module, "_migrate", _dying_migrate)
    plan = build_plan([tmp_path], RULE_IDS, jobs=2)
    by_path = {o.path: o for o in plan.outcomes}
    assert len(by_path) == 10
    for name, reason in dying.items():
        outcome = by_path[name]
        assert isinstance(outcome, Failed) and "worker process died" in outcome.message, outcome
        assert reason in outcome.message
    assert all(isinstance(by_path[f"ok{i}.py"], Changed) for i in range(7))


def _square(x: int) -> int:
    if x == 13:
        raise ValueError("thirteen")
    return x * x


def test_map_resilient_returns_everything_and_passes_exceptions_on() -> None:
    assert sorted(map_resilient(_square, range(12), workers=3, on_death=lambda i, r: -1)) == [x * x for x in range(12)]
    with pytest.raises(ValueError, match="thirteen"):
        list(map_resilient(_square, range(20), workers=2, on_death=lambda i, r: -1))


def test_recursion_in_serial_mode_is_a_failed_outcome(all_rules) -> None:
    source = USES + b"y = " + b"-" * 600 + b"1\n"
    outcome = migrate_source(source, all_rules, FileContext("deep.py"))
    assert isinstance(outcome, Failed) and "too deeply nested" in outcome.message


# --- signals ------------------------------------------------------------------------------


def _tree(root: Path, count: int) -> list[Path]:
    root.mkdir(exist_ok=True)
    paths = [root / f"f{i:03}.py" for i in range(count)]
    for path in paths:
        path.write_bytes(USES)
    return paths


def _plan(paths: list[Path], root: Path):  # type: ignore[no-untyped-def]
    return tuple(Changed(p.name, USES, MIGRATED, ("r",)) for p in paths)


def test_first_signal_finishes_the_file_in_flight_then_stops(tmp_path: Path, monkeypatch) -> None:
    paths = _tree(tmp_path, 5)
    real = write_module.apply_outcome
    calls = []

    def signalling(outcome, root):  # type: ignore[no-untyped-def]
        calls.append(outcome.path)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real(outcome, root)

    monkeypatch.setattr(write_module, "apply_outcome", signalling)
    written = write_plan(_plan(paths, tmp_path), tmp_path)
    assert written.signal == signal.SIGINT
    assert [o.path for o in written.not_reached] == ["f002.py", "f003.py", "f004.py"]
    assert [p.read_bytes() for p in paths] == [MIGRATED] * 2 + [USES] * 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_second_signal_abandons_the_write_in_flight(tmp_path: Path, monkeypatch) -> None:
    paths = _tree(tmp_path, 2)
    real = os.fsync

    def twice(fd: int) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        real(fd)

    monkeypatch.setattr(os, "fsync", twice)
    with pytest.raises(KeyboardInterrupt):
        write_plan(_plan(paths, tmp_path), tmp_path)
    monkeypatch.undo()
    assert [p.read_bytes() for p in paths] == [USES, USES]
    assert not leftovers(tmp_path)


def test_the_cli_says_what_it_wrote_when_interrupted(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from moe_migrate.cli import app

    paths = _tree(tmp_path / "t", 4)
    real = write_module.apply_outcome

    def signalling(outcome, root):  # type: ignore[no-untyped-def]
        if outcome.path == "f001.py":
            os.kill(os.getpid(), signal.SIGINT)
        return real(outcome, root)

    monkeypatch.setattr(write_module, "apply_outcome", signalling)
    result = CliRunner().invoke(app, ["--no-smoke", "-j", "1", str(tmp_path / "t")])
    assert result.exit_code == 130, result.output
    assert "rewrote f000.py" in result.output and "rewrote f001.py" in result.output
    assert "interrupted: 2 files rewritten (listed above), 2 not written" in result.output
    assert [p.read_bytes() for p in paths] == [MIGRATED] * 2 + [USES] * 2


SLOW = """
import os, time
_fsync = os.fsync
def fsync(fd):
    time.sleep({fsync})
    _fsync(fd)
os.fsync = fsync
if {migrate}:
    from moe_migrate.codemod import run
    _migrate = run._migrate
    def slow(candidate):
        time.sleep({migrate})
        return _migrate(candidate)
    run._migrate = slow
"""


def _start(tree: Path, *, fsync: float = 0.0, migrate: float = 0.0) -> subprocess.Popen[bytes]:
    """The CLI on ``tree``, slowed down (a sitecustomize module) so a signal lands where meant."""
    site = tree.parent / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SLOW.format(fsync=fsync, migrate=migrate))
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-m", "moe_migrate", "--no-smoke", "-j", "2", str(tree)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def _wait_for_first_write(process: subprocess.Popen[bytes], first: Path, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while first.read_bytes() == USES:
        assert process.poll() is None, process.stderr.read().decode()  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the run never started writing"
        time.sleep(0.001)


def test_ctrl_c_while_analysing_stops_promptly_and_writes_nothing(tmp_path: Path) -> None:
    paths = _tree(tmp_path / "t", 60)
    process = _start(tmp_path / "t", migrate=0.2)  # 60 files: at least 6 s of analysis
    time.sleep(2)
    assert process.poll() is None
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert time.monotonic() - sent < 3, "not prompt"
    assert process.returncode == 130, stderr.decode()
    assert b"interrupted while analysing; nothing was written" in stderr
    assert all(p.read_bytes() == USES for p in paths)
    assert not leftovers(tmp_path / "t")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_signal_while_writing_leaves_no_partial_and_no_temporary_file(tmp_path: Path, signum: int) -> None:
    paths = _tree(tmp_path / "t", 40)
    process = _start(tmp_path / "t", fsync=0.01)  # 40 files: at least 0.8 s of writing
    _wait_for_first_write(process, paths[0])
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=30)
    contents = [p.read_bytes() for p in paths]
    assert all(c in (USES, MIGRATED) for c in contents), "a partial file"
    assert not leftovers(tmp_path / "t")
    done = contents.count(MIGRATED)
    assert 0 < done < 40, "the signal was meant to land while writing"
    assert contents == [MIGRATED] * done + [USES] * (40 - done), "written in path order, none skipped"
    if signum == signal.SIGTERM:
        assert process.returncode == 128 + signal.SIGTERM, stderr.decode()
        assert f"interrupted: {done} file{'s' if done != 1 else ''} rewritten".encode() in stderr
        assert stderr.count(b"rewrote ") == done
    else:
        assert process.returncode == -signal.SIGKILL


# --- arguments ----------------------------------------------------------------------------


def test_missing_paths_are_named_and_nothing_is_written(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_bytes(USES)
    os.symlink("gone.py", tmp_path / "dangling.py")
    result = moe_migrate(str(tmp_path / "a.py"), str(tmp_path / "nope"), str(tmp_path / "dangling.py"))
    assert result.returncode == 2
    assert b"no such file or directory:" in result.stderr
    assert b"nope" in result.stderr and b"a broken symbolic link to gone.py" in result.stderr
    assert b"Nothing was changed" in result.stderr
    assert (tmp_path / "a.py").read_bytes() == USES


def test_an_empty_directory_is_a_warning_not_an_error(tmp_path: Path) -> None:
    result = moe_migrate("--no-smoke", str(tmp_path))
    assert result.returncode == 0
    assert b"warning: no Python files" in result.stderr


def test_overlapping_arguments_migrate_each_file_once(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    _tree(tree, 2)
    (tree / "sub").mkdir()
    (tree / "sub" / "c.py").write_bytes(USES)
    os.symlink(tree, tmp_path / "alias")
    args = [str(tree), str(tree / "sub"), str(tree / "f000.py"), str(tree / "f000.py"), str(tmp_path / "alias")]
    result = moe_migrate("--no-smoke", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr.count(b"rewrote ") == 3
    assert tree_bytes(tree) == {"f000.py": MIGRATED, "f001.py": MIGRATED, "sub/c.py": MIGRATED}


# --- a corrupted tree ---------------------------------------------------------------------

CORRUPTIONS = {
    "vllm/model_executor/models/qwen2_moe.py": lambda data: data + b"\x00",
    "vllm/model_executor/models/llama4.py": lambda data: data[: len(data) // 2] + b"(\n",
    "vllm/model_executor/models/aria.py": lambda data: data.replace(b"SharedFusedMoE", b"SharedFusedMoE \xff", 1),
}


def test_a_corrupted_tree_migrates_every_other_file_as_a_clean_one(tmp_path: Path) -> None:
    clean, corrupted = tmp_path / "clean", tmp_path / "corrupted"
    shutil.copytree(FIXTURES / "vllm-mini", clean)
    shutil.copytree(FIXTURES / "vllm-mini", corrupted)
    for name, corrupt in CORRUPTIONS.items():
        path = corrupted / name
        path.write_bytes(corrupt(path.read_bytes()))
    broken = {name: (corrupted / name).read_bytes() for name in CORRUPTIONS}
    assert moe_migrate("--no-smoke", "-j", "2", str(clean)).returncode == 0
    result = moe_migrate("--no-smoke", "-j", "2", str(corrupted))
    assert result.returncode == 2
    for name in CORRUPTIONS:
        assert f"{name}: error: ".encode() in result.stderr, name
    assert result.stderr.count(b": error: ") == len(CORRUPTIONS)
    want = {**tree_bytes(clean), **broken}
    assert tree_bytes(corrupted) == want
