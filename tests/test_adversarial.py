"""Hostile trees: every case in fixtures/adversarial/cases.json gets exactly its expected outcome.

One tree holds every case, so they also prove that no bad file stops the run or disturbs the
others: the committed inputs in ``files/``, plus what cannot be committed (unreadable files,
symlink loops, FIFOs, huge or very deep files, files that vanish or change mid-run), made here.
The tree goes through the real engine (a two-process pool) and the real writer, then a second
run must find nothing to do. Every file that is not rewritten must keep every byte.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from conftest import FIXTURES
from helpers import moe_migrate
from moe_migrate import rules
from moe_migrate.codemod import run as run_module
from moe_migrate.codemod.outcomes import EDITS, FileOutcome
from moe_migrate.codemod.run import build_plan
from moe_migrate.codemod.write import TEMP_SUFFIX, write_plan

ADVERSARIAL = FIXTURES / "adversarial"
CASES = json.loads((ADVERSARIAL / "cases.json").read_text())["cases"]

IMPORT = b"from vllm.model_executor.layers.fused_moe import SharedFusedMoE\n"
USES = IMPORT + b"x = SharedFusedMoE\n"
MIGRATED = b"from vllm.model_executor.layers.fused_moe import FusedMoE\nx = FusedMoE\n"
#: Files the test itself edits or deletes during the run.
MEDDLED = {"changed_before_write.py", "deleted_before_write.py", "vanished.py"}


@dataclass
class Hooks:
    """What the generators ask of the run beyond files: patches, and edits between plan and write."""

    unreadable: set[str]
    vanish: list[Path]
    before_write: list[Callable[[], None]]
    expected: dict[str, bytes]


def _unreadable(tree: Path, outside: Path, hooks: Hooks) -> None:
    path = tree / "unreadable.py"
    path.write_bytes(USES)
    path.chmod(0)
    hooks.unreadable.add(str(path))  # root reads a 0o000 file: the read is refused by a patch


def _vanished(tree: Path, outside: Path, hooks: Hooks) -> None:
    (tree / "vanished.py").write_bytes(USES)
    hooks.vanish.append(tree / "vanished.py")


def _symlink_loop(tree: Path, outside: Path, hooks: Hooks) -> None:
    os.symlink("loop_b.py", tree / "loop_a.py")
    os.symlink("loop_a.py", tree / "loop_b.py")


def _symlink_self_loop(tree: Path, outside: Path, hooks: Hooks) -> None:
    os.symlink("symlink_self_loop.py", tree / "symlink_self_loop.py")


def _broken_symlink(tree: Path, outside: Path, hooks: Hooks) -> None:
    os.symlink("no_such_target.py", tree / "broken_symlink.py")


def _symlink_outside(tree: Path, outside: Path, hooks: Hooks) -> None:
    (outside / "target.py").write_bytes(USES)
    os.symlink(outside / "target.py", tree / "symlink_outside.py")


def _symlink_outside_no_trigger(tree: Path, outside: Path, hooks: Hooks) -> None:
    (outside / "plain.py").write_bytes(b"x = 1\n")
    os.symlink(outside / "plain.py", tree / "symlink_outside_no_trigger.py")


def _symlink_inside(tree: Path, outside: Path, hooks: Hooks) -> None:
    (tree / "symlink_target.py").write_bytes(USES)
    os.symlink("symlink_target.py", tree / "symlink_inside.py")
    hooks.expected["symlink_target.py"] = MIGRATED


def _fifo(tree: Path, outside: Path, hooks: Hooks) -> None:
    os.mkfifo(tree / "fifo.py")


def _device_link(tree: Path, outside: Path, hooks: Hooks) -> None:
    os.symlink(os.devnull, tree / "device_link.py")


def _directory_named_py(tree: Path, outside: Path, hooks: Hooks) -> None:
    (tree / "pkg.py").mkdir()
    (tree / "pkg.py" / "inner.py").write_bytes(USES)
    hooks.expected["pkg.py/inner.py"] = MIGRATED


def _too_large(tree: Path, outside: Path, hooks: Hooks) -> None:
    filler = b"# padding padding padding padding padding padding padding padding\n" * 40_000
    (tree / "too_large.py").write_bytes(USES + filler)  # 2.6 MiB


def _huge_no_trigger(tree: Path, outside: Path, hooks: Hooks) -> None:
    with open(tree / "huge_no_trigger.py", "wb") as handle:
        handle.truncate(64 * 2**20)  # sparse: 64 MiB of NULs that cost no disk


def _deep(name: str, body: bytes) -> Callable[[Path, Path, Hooks], None]:
    def make(tree: Path, outside: Path, hooks: Hooks) -> None:
        (tree / f"{name}.py").write_bytes(IMPORT + body + b"y = SharedFusedMoE\n")

    return make


GENERATORS: dict[str, Callable[[Path, Path, Hooks], None]] = {
    "unreadable": _unreadable,
    "vanished": _vanished,
    "symlink-loop": _symlink_loop,
    "symlink-self-loop": _symlink_self_loop,
    "broken-symlink": _broken_symlink,
    "symlink-outside": _symlink_outside,
    "symlink-outside-no-trigger": _symlink_outside_no_trigger,
    "symlink-inside": _symlink_inside,
    "fifo": _fifo,
    "device-link": _device_link,
    "directory-named-py": _directory_named_py,
    "too-large": _too_large,
    "huge-no-trigger": _huge_no_trigger,
    "deep-parens": _deep("deep_parens", b"x = " + b"(" * 1500 + b"1" + b")" * 1500 + b"\n"),
    "deep-calls": _deep("deep_calls", b"x = " + b"f(" * 300 + b")" * 300 + b"\n"),
    "deep-unary": _deep("deep_unary", b"x = " + b"-" * 5000 + b"1\n"),
    "deep-indent": _deep("deep_indent", b"".join(b" " * i + b"if x:\n" for i in range(101)) + b" " * 101 + b"pass\n"),
    # The deep statement names the class, so LibCST must parse it (a statement that does not is
    # left out of what LibCST parses: see tests/test_slicing.py).
    "deep-but-valid": _deep("deep_but_valid", b"x = " + b"-" * 600 + b"SharedFusedMoE\n"),
}


def _change_before_write(tree: Path, outside: Path, hooks: Hooks) -> None:
    path = tree / "changed_before_write.py"
    path.write_bytes(USES)
    hooks.before_write.append(lambda: path.write_bytes(USES + b"# edited meanwhile\n"))


def _delete_before_write(tree: Path, outside: Path, hooks: Hooks) -> None:
    path = tree / "deleted_before_write.py"
    path.write_bytes(USES)
    hooks.before_write.append(path.unlink)


GENERATORS["changed-before-write"] = _change_before_write
GENERATORS["deleted-before-write"] = _delete_before_write


def make_tree(base: Path) -> tuple[Path, Hooks]:
    tree, outside = base / "tree", base / "outside"
    shutil.copytree(ADVERSARIAL / "files", tree)
    outside.mkdir()
    hooks = Hooks(set(), [], [], {})
    for name in dict.fromkeys(case["make"] for case in CASES if "make" in case):
        GENERATORS[name](tree, outside, hooks)
    return tree, hooks


def snapshot(root: Path) -> dict[str, object]:
    """Every entry under ``root``, without following links or opening special files."""
    state: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            info = path.lstat()
            key = path.relative_to(root).as_posix()
            if stat.S_ISLNK(info.st_mode):
                state[key] = ("link", os.readlink(path))
            elif stat.S_ISREG(info.st_mode) and info.st_mode & 0o400 and info.st_size < 2**24:
                state[key] = path.read_bytes()
            else:
                state[key] = (stat.S_IFMT(info.st_mode), info.st_size)
    return state


@dataclass
class Result:
    tree: Path
    before: dict[str, object]
    after: dict[str, object]
    outcomes: dict[str, FileOutcome]
    second: dict[str, FileOutcome]
    expected: dict[str, bytes]


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> Result:
    tree, hooks = make_tree(tmp_path_factory.mktemp("adversarial"))
    before = snapshot(tree)
    real_open, real_discover = os.open, run_module.discover

    def refusing_open(path, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(path) in hooks.unreadable:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    def vanishing_discover(*args, **kwargs):  # type: ignore[no-untyped-def]
        found = real_discover(*args, **kwargs)
        for path in hooks.vanish:
            path.unlink(missing_ok=True)
        return found

    ids = list(rules.RULE_IDS)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "open", refusing_open)
        patch.setattr(run_module, "discover", vanishing_discover)
        plan = build_plan([tree], ids, jobs=2)
        for edit in hooks.before_write:
            edit()
        written = write_plan(plan.outcomes, plan.root)
        assert written.signal is None
        after = snapshot(tree)
        second = build_plan([tree], ids, jobs=2)
    return Result(
        tree,
        before,
        after,
        {o.path: o for o in written.outcomes},
        {o.path: o for o in second.outcomes},
        hooks.expected,
    )


def test_enough_cases() -> None:
    assert len(CASES) >= 40
    committed = {p.name for p in (ADVERSARIAL / "files").iterdir()}
    described = {case["path"] for case in CASES if "make" not in case}
    assert committed == described, "every committed file has a case, and every case a file"


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_case(case: dict, result: Result, update_goldens: bool) -> None:
    path = case["path"]
    outcome = result.outcomes.get(path)
    status = outcome.status if outcome is not None else "absent"
    detail = getattr(outcome, "message", "")
    assert status == case["status"], f"{path}: {status} {detail}"
    if status == "failed":
        assert outcome.stage == case["stage"], detail  # type: ignore[union-attr]
        assert case["message"] in detail
        assert path in (detail + path) and not detail.startswith("Traceback")
    if status == "changed":
        golden = ADVERSARIAL / "expected" / path
        if path in result.expected:
            want = result.expected[path]
        else:
            if update_goldens:
                golden.parent.mkdir(parents=True, exist_ok=True)
                golden.write_bytes(outcome.after)  # type: ignore[union-attr]
            want = golden.read_bytes()
        assert result.after[path] == want, "wrong bytes on disk"
        assert not isinstance(result.second.get(path), EDITS), "a second run changed it again"
    elif path in result.before and path not in MEDDLED:
        assert result.after.get(path) == result.before[path], "a file that was not rewritten changed"


def test_nothing_else_changed_and_no_temporary_file(result: Result) -> None:
    rewritten = {path for path, o in result.outcomes.items() if isinstance(o, EDITS)}
    for path, before in result.before.items():
        if path in rewritten or path in MEDDLED:
            continue
        assert result.after.get(path) == before, path
    assert not [p for p in result.after if p.endswith(TEMP_SUFFIX)]
    assert set(result.after) <= set(result.before) | {"symlink_target.py"}


def test_the_outside_target_of_a_link_is_untouched(result: Result) -> None:
    assert (result.tree.parent / "outside" / "target.py").read_bytes() == USES


def test_a_link_inside_the_tree_stays_a_link(result: Result) -> None:
    assert os.readlink(result.tree / "symlink_inside.py") == "symlink_target.py"
    assert (result.tree / "symlink_inside.py").read_bytes() == MIGRATED


def test_the_cli_names_every_bad_file_and_exits_2(tmp_path: Path) -> None:
    tree, _ = make_tree(tmp_path)
    result = moe_migrate("--no-smoke", "-j", "2", str(tree))
    assert result.returncode == 2
    stderr = result.stderr.decode()
    for case in CASES:
        if case["status"] == "failed" and case.get("make") not in ("unreadable", "vanished", "changed-before-write", "deleted-before-write"):
            assert f"{case['path']}: error: " in stderr, case["name"]
    assert "Traceback" not in stderr
