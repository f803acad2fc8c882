"""Paths -> the sorted, de-duplicated Python files a run looks at.

Inside a git work tree only files git tracks or would track are taken (``.gitignore`` is
respected); elsewhere hidden directories and ``__pycache__`` are skipped. ``--exclude`` globs
apply to explicit file arguments too, since pre-commit passes files explicitly.
"""

from __future__ import annotations

import fnmatch
import os
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

SUFFIXES = (".py", ".pyi")


class DiscoveryError(Exception):
    """A path argument that cannot be used (it does not exist)."""


@dataclass(frozen=True)
class Discovered:
    #: Absolute paths, sorted, each once.
    files: tuple[Path, ...]
    #: The directory report paths are relative to.
    root: Path


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
    return Path(os.path.relpath(path, root)).as_posix()


def discover(paths: Sequence[Path], excludes: Sequence[str] = ()) -> Discovered:
    """Expand ``paths`` into files; raise :class:`DiscoveryError` for a missing path."""
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise DiscoveryError(f"no such file or directory: {', '.join(missing)}")
    root = _root(paths)
    found: dict[Path, None] = {}
    for path in paths:
        if path.is_dir():
            candidates = _git_files(path)
            files = candidates if candidates is not None else list(_walk(path))
        else:
            files = [path]
        for file in files:
            absolute = Path(os.path.abspath(file))
            if excluded(relative(absolute, root), excludes) or excluded(
                relative(absolute, Path.cwd()), excludes
            ):
                continue
            found[absolute] = None
    return Discovered(tuple(sorted(found)), root)


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
