"""Paths -> the sorted, de-duplicated Python files a run looks at.

Inside a git work tree only files git tracks or would track are taken (``.gitignore`` is
respected); elsewhere hidden directories and ``__pycache__`` are skipped. ``--exclude`` globs
apply to explicit file arguments too, since pre-commit passes files explicitly.
"""

from __future__ import annotations

import errno
import fnmatch
import mmap
import os
import stat
import subprocess
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

if TYPE_CHECKING:
    from moe_migrate.codemod.outcomes import Failed

SUFFIXES = (".py", ".pyi")

#: A file with a trigger that is larger than this is reported, not parsed: LibCST needs about a
#: minute and half a gigabyte per MiB of source, and no hand-written module comes close.
MAX_SOURCE_BYTES = 2 * 2**20
#: Above this a file is searched for triggers through mmap instead of being read whole.
_MAP_ABOVE = 16 * 2**20


def mentions(data: "bytes | mmap.mmap", triggers: "Sequence[bytes | tuple[bytes, ...]]") -> bool:
    """Whether ``data`` holds one of ``triggers``: a byte string, or every byte string of a tuple."""
    return any(
        data.find(trigger) >= 0 if isinstance(trigger, bytes) else all(data.find(part) >= 0 for part in trigger)
        for trigger in triggers
    )


class DiscoveryError(Exception):
    """A path argument that cannot be used (it does not exist)."""


@dataclass(frozen=True)
class Discovered:
    #: Absolute paths, sorted, each once (a file reached through two paths: the first).
    files: tuple[Path, ...]
    #: The directory report paths are relative to.
    root: Path
    #: Resolved directories the run may write in: each directory argument, and the directory
    #: of each file argument.
    roots: tuple[Path, ...] = ()
    #: File -> where it really is, for the files reached through a symbolic link.
    links: Mapping[Path, Path] = field(default_factory=dict)

    def outside(self, path: Path) -> str | None:
        """Why ``path`` must not be migrated, if it is a link that leads out of the roots."""
        target = self.links.get(path)
        if target is None or not self.roots or any(_within(target, root) for root in self.roots):
            return None
        return (
            f"not migrated: it is a symbolic link to {target}, outside the paths given, and "
            "moe-migrate never writes through a link out of them. Migrate that file where it "
            "lives, or pass --exclude for the link."
        )

    def read(self, path: Path, triggers: "Sequence[bytes | tuple[bytes, ...]] | None") -> "bytes | Failed | None":
        """The bytes of a file worth parsing, ``Failed`` saying why it cannot be, or ``None``.

        ``None``: the file contains none of ``triggers`` (never parsed, never reported).
        ``triggers=None`` takes every readable file. Never blocks on a FIFO and never reads
        a huge file whole.
        """
        from moe_migrate.codemod.outcomes import Failed

        name = relative(path, self.root)
        source = read_source(path, triggers)
        if isinstance(source, str):
            return Failed(name, "read", source)
        if source is None:
            return None
        if len(source) > MAX_SOURCE_BYTES:
            return Failed(
                name,
                "read",
                f"not migrated: too large ({len(source) / 2**20:.1f} MiB; the limit is "
                f"{MAX_SOURCE_BYTES // 2**20} MiB). Migrate it by hand, or pass --exclude for it.",
            )
        escape = self.outside(path)
        if escape is not None:
            return Failed(name, "read", escape)
        return source


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


_READ_ERRORS = {
    errno.ENOENT: "cannot read: the file vanished during the run",
    errno.EACCES: "cannot read: permission denied",
    errno.EPERM: "cannot read: operation not permitted",
    errno.ELOOP: "cannot read: a loop of symbolic links",
    errno.EISDIR: "cannot read: it is a directory",
    errno.ENXIO: "cannot read: not a regular file (a socket?)",
}

_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def read_source(path: Path, triggers: "Sequence[bytes | tuple[bytes, ...]] | None" = None) -> bytes | str | None:
    """The bytes of ``path``; a message (str) saying why it cannot be read; or ``None`` when
    it holds none of ``triggers``. Never raises ``OSError``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ENOENT and os.path.islink(path):
            return f"cannot read: a broken symbolic link (to {os.readlink(path)})"
        return _READ_ERRORS.get(error.errno, f"cannot read: {error.strerror or error}")
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
            return f"cannot read: it is {kind}, not a regular file"
        if triggers is not None and info.st_size > _MAP_ABOVE:
            with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mapped:
                if not mentions(mapped, triggers):
                    return None
                return mapped[: MAX_SOURCE_BYTES + 1]  # enough to be reported as too large
        chunks = []
        while True:
            chunk = os.read(fd, max(info.st_size + 1, 65536))
            if not chunk:
                break
            chunks.append(chunk)
        data = b"".join(chunks)
    except OSError as error:
        return _READ_ERRORS.get(error.errno, f"cannot read: {error.strerror or error}")
    finally:
        os.close(fd)
    if triggers is not None and not mentions(data, triggers):
        return None
    return data


def excluded(relative: str, patterns: Sequence[str]) -> bool:
    """Whether a POSIX path matches a pattern, itself or through one of its parent directories.

    A pattern without ``/`` also matches any single component (``vendor`` excludes
    ``a/vendor/x.py``).
    """
    if not patterns:
        return False
    path = PurePosixPath(relative)
    candidates = [str(path), *(str(parent) for parent in path.parents if str(parent) != ".")]
    for pattern in patterns:
        pattern = pattern.rstrip("/")
        if any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
            return True
        if "/" not in pattern and any(fnmatch.fnmatchcase(part, pattern) for part in path.parts):
            return True
    return False


def _git_files(directory: Path) -> list[Path] | None:
    """Files git tracks or would track under ``directory``; None outside a work tree."""
    try:
        result = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "."],
            cwd=directory,
            capture_output=True,
            check=False,
        )
    except OSError:
        return None
    if result.returncode != 0:
        return None
    names = [n for n in result.stdout.decode("utf-8", "surrogateescape").split("\0") if n]
    # --cached lists files deleted from the work tree but not from the index: skip those.
    return [
        directory / name
        for name in dict.fromkeys(names)
        if name.endswith(SUFFIXES) and os.path.lexists(directory / name)
    ]


def _walk(directory: Path) -> Iterable[Path]:
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
        for name in filenames:
            if name.endswith(SUFFIXES):
                yield Path(dirpath) / name


def _root(paths: Sequence[Path]) -> Path:
    directories = [p for p in paths if p.is_dir()]
    if len(paths) == 1 and directories:
        return directories[0].resolve()
    return Path.cwd().resolve()


def relative(path: Path, root: Path) -> str:
    """POSIX path of ``path`` relative to ``root`` (``..`` where it lies outside)."""
    text, prefix = str(path), str(root).rstrip(os.sep) + os.sep
    if os.sep == "/" and text.startswith(prefix) and os.path.isabs(text) and "/.." not in text:
        return text[len(prefix) :]  # the usual case, without relpath's normalising
    return Path(os.path.relpath(path, root)).as_posix()


def _missing(path: Path) -> str:
    if os.path.islink(path):
        try:
            os.stat(path)
        except OSError as error:
            if error.errno == errno.ELOOP:
                return f"{path} (a loop of symbolic links)"
        return f"{path} (a broken symbolic link to {os.readlink(path)})"
    return str(path)


def discover(paths: Sequence[Path], excludes: Sequence[str] = ()) -> Discovered:
    """Expand ``paths`` into files; raise :class:`DiscoveryError` for a missing path.

    Overlapping arguments (a file twice, a directory and a file in it, two paths to one file
    through a link) yield each file once, so that no file is written twice.
    """
    missing = [_missing(p) for p in paths if not p.exists()]
    if missing:
        raise DiscoveryError(
            f"no such file or directory: {', '.join(missing)}. Nothing was changed."
        )
    root = _root(paths)
    roots: dict[Path, None] = {}
    found: dict[Path, None] = {}
    for path in paths:
        if path.is_dir():
            roots[Path(os.path.realpath(path))] = None
            candidates = _git_files(path)
            files = candidates if candidates is not None else list(_walk(path))
        else:
            roots[Path(os.path.realpath(Path(os.path.abspath(path)).parent))] = None
            files = [path]
        cwd = Path.cwd()
        for file in files:
            absolute = Path(os.path.abspath(file))
            if excludes and (
                excluded(relative(absolute, root), excludes) or excluded(relative(absolute, cwd), excludes)
            ):
                continue
            found[absolute] = None
    # One path per file: the file itself where it was found, else the first link to it.
    by_target: dict[Path, Path] = {}
    real_directories: dict[str, str] = {}
    for absolute in sorted(found):
        target = _real(absolute, real_directories)
        if target not in by_target or absolute == target:
            by_target[target] = absolute
    links = {path: target for target, path in by_target.items() if path != target}
    return Discovered(tuple(sorted(by_target.values())), root, tuple(roots), links)


def _real(path: Path, directories: dict[str, str]) -> Path:
    """``os.path.realpath(path)``, resolving each directory once (a tree has far fewer
    directories than files) and the file itself only where it is a link."""
    head, name = os.path.split(str(path))
    real = directories.get(head)
    if real is None:
        real = directories[head] = os.path.realpath(head)
    if os.path.islink(path):
        return Path(os.path.realpath(path))
    return Path(os.path.join(real, name))


@lru_cache(maxsize=None)
def _package_of_directory(directory: Path) -> str | None:
    if not (directory / "__init__.py").is_file():
        return None
    parent = _package_of_directory(directory.parent) if directory.parent != directory else None
    return f"{parent}.{directory.name}" if parent else directory.name


def module_name(path: Path) -> tuple[str | None, bool]:
    """(dotted module name from the ``__init__.py`` chain, is a package ``__init__``)."""
    package = _package_of_directory(path.parent)
    stem = path.name.rsplit(".", 1)[0]
    if stem == "__init__":
        return package, True
    if package is None:
        return None, False
    return f"{package}.{stem}", False
