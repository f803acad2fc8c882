"""Putting a Plan on disk: atomic, only where bytes change, never over a file that moved on.

Each file is written to a temporary file in its own directory (an anonymous ``O_TMPFILE``
where the filesystem has it, so that nothing with a name exists until the last moment), given
the original's owner and mode, flushed to disk, then renamed over the original, and the
directory is flushed too: a reader, a crash or a power cut sees either the old bytes or the
new ones, never a mix. What is written must still parse; a file that changed on disk since it
was read is not overwritten; a symbolic link is written through to its target (the Plan never
holds one that leads out of the paths given: see :meth:`Discovered.outside
<moe_migrate.codemod.discover.Discovered.outside>`).

A first SIGINT or SIGTERM while writing lets the file in flight finish and stops before the
next (:func:`write_plan`); a second abandons it, leaving the original in place.
"""

from __future__ import annotations

import ast
import errno
import os
import secrets
import signal
import stat
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from moe_migrate.codemod.outcomes import EDITS, Changed, Created, Deleted, Failed, FileOutcome

#: Suffix of the named temporary files; never left behind except by a SIGKILL or a power cut
#: in the instant between naming one and renaming it.
TEMP_SUFFIX = ".moe-migrate-tmp"

_NO_TMPFILE: set[str] = set()  # directories where O_TMPFILE or /proc/self/fd failed once
_NO_LINK = {errno.ENOENT, errno.EXDEV, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL}


class _OwnerError(OSError):
    """The temporary file cannot be given the original's owner and group."""


def unparsable(before: bytes, after: bytes) -> str | None:
    """Why ``after`` does not parse under this Python, or ``None``.

    ``None`` too when ``before`` did not parse either (newer syntax than the running Python),
    since then the check says nothing about the rewrite.
    """
    try:
        compile(after, "<rewritten>", "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
        return None
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        try:
            compile(before, "<original>", "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None
        line = f" at line {error.lineno}" if isinstance(error, SyntaxError) and error.lineno else ""
        return f"{getattr(error, 'msg', None) or type(error).__name__}{line}"


def _default_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _open_temp(directory: Path, name: str) -> tuple[int, str | None]:
    """A file to write into, in ``directory``: (fd, its name, or None while it has none)."""
    if hasattr(os, "O_TMPFILE") and str(directory) not in _NO_TMPFILE:
        try:
            return os.open(directory, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600), None
        except OSError as error:
            if error.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOTSUP):
                raise
            _NO_TMPFILE.add(str(directory))
    fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=TEMP_SUFFIX)
    return fd, temp


def _name_temp(fd: int, directory: Path, name: str) -> str:
    """Give an anonymous O_TMPFILE a name next to the target, for the rename."""
    directory_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for _ in range(100):
            temp = f".{name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
            try:
                # linkat(AT_SYMLINK_FOLLOW) on the /proc link: plain link() would not follow it.
                os.link(f"/proc/self/fd/{fd}", temp, dst_dir_fd=directory_fd, follow_symlinks=True)
                return str(directory / temp)
            except FileExistsError:
                continue
    finally:
        os.close(directory_fd)
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(directory))


def _keep_metadata(fd: int, like: os.stat_result | None, mode: int | None) -> None:
    if like is not None:
        mine = os.fstat(fd)
        if (mine.st_uid, mine.st_gid) != (like.st_uid, like.st_gid):
            try:
                os.fchown(fd, like.st_uid, like.st_gid)
            except PermissionError as error:
                raise _OwnerError(
                    errno.EPERM, f"cannot keep its owner and group ({like.st_uid}:{like.st_gid})"
                ) from error
        mode = stat.S_IMODE(like.st_mode)
    if mode is not None:
        os.fchmod(fd, mode)  # after fchown, which may clear set-user-ID bits


def write_atomic(path: Path, data: bytes, like: os.stat_result | None = None, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` atomically.

    ``like``: the original's stat, whose owner, group and mode the new file gets (raises
    ``OSError`` rather than write a file that would change hands); else ``mode``. On any error,
    KeyboardInterrupt included, the original is untouched and no temporary file remains.
    """
    directory, name = path.parent, path.name
    fd, temp = _open_temp(directory, name)
    try:
        _write_all(fd, data)
        _keep_metadata(fd, like, mode)
        os.fsync(fd)
        if temp is None:
            try:
                temp = _name_temp(fd, directory, name)
            except OSError as error:  # no /proc, say: write it again the portable way
                if error.errno not in _NO_LINK:
                    raise
                _NO_TMPFILE.add(str(directory))
                os.close(fd)
                fd = -1
                write_atomic(path, data, like, mode)
                return
        os.replace(temp, path)
        temp = None
    finally:
        if fd >= 0:
            os.close(fd)
        if temp is not None:
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot sync a directory; the rename itself is still atomic
    finally:
        os.close(fd)


def _current(path: Path) -> bytes | None:
    """The bytes now at ``path`` (a regular file, through links), or None if it is gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return handle.read()


def apply_outcome(outcome: FileOutcome, root: Path) -> FileOutcome:
    """Carry out one edit; return the outcome, or ``Failed(stage="write")`` saying why not."""
    path = root / outcome.path
    try:
        if isinstance(outcome, Created):
            if os.path.lexists(path):
                return Failed(outcome.path, "write", "not created: the file already exists")
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, outcome.after, mode=_default_mode())
            return outcome
        if not isinstance(outcome, (Changed, Deleted)):
            return outcome
        # Write through a link to its target, so the link stays a link.
        target = Path(os.path.realpath(path)) if isinstance(outcome, Changed) else path
        current = _current(target)
        if current is None:
            return Failed(outcome.path, "write", "not written: the file was deleted or replaced while it was being migrated; run again")
        if current != outcome.before:
            return Failed(
                outcome.path,
                "write",
                "not written: the file changed on disk while it was being migrated; run again",
            )
        if isinstance(outcome, Deleted):
            path.unlink()
            return outcome
        if path.suffix in (".py", ".pyi"):
            problem = unparsable(outcome.before, outcome.after)
            if problem is not None:
                return Failed(
                    outcome.path,
                    "write",
                    f"not written: the rewritten file would not parse ({problem}); this is a bug in moe-migrate, please report it",
                )
        write_atomic(target, outcome.after, like=os.stat(target))
        return outcome
    except _OwnerError as error:
        return Failed(outcome.path, "write", f"not written: {error.strerror}; run moe-migrate as its owner")
    except OSError as error:
        return Failed(outcome.path, "write", f"not written: {error.strerror or error}; the file is unchanged")


@contextmanager
def interrupts_deferred() -> Iterator[Callable[[], int | None]]:
    """Inside, a first SIGINT or SIGTERM is recorded instead of acted on; a second raises.

    Yields a function that returns the signal received so far (or None). Outside the main
    thread, where Python cannot install handlers, signals behave as usual.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return

    def handler(signum: int, frame: object) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: received[0] if received else None
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@dataclass(frozen=True)
class Written:
    """What :func:`write_plan` did."""

    #: Every outcome: carried out, ``Failed`` where a write was refused, and (when stopped)
    #: the edits not reached, as they were.
    outcomes: tuple[FileOutcome, ...]
    #: The edits not reached because a signal stopped the run: none of them is on disk.
    not_reached: tuple[FileOutcome, ...] = ()
    #: The signal (SIGINT or SIGTERM) that stopped the run, or None.
    signal: int | None = None


def write_plan(outcomes: Sequence[FileOutcome], root: Path) -> Written:
    """Apply every edit in order; a first SIGINT/SIGTERM stops it cleanly between two files."""
    done: list[FileOutcome] = []
    with interrupts_deferred() as interrupted:
        for index, outcome in enumerate(outcomes):
            signum = interrupted()
            if signum is not None:
                rest = tuple(outcomes[index:])
                return Written((*done, *rest), tuple(o for o in rest if isinstance(o, EDITS)), signum)
            done.append(apply_outcome(outcome, root))
        return Written(tuple(done), (), interrupted())
