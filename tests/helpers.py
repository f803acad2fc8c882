"""Small helpers shared by the CLI and tree tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

#: Where downloaded wheels' sources are kept between runs (git ignores it).
CACHE = Path(os.environ.get("MOE_MIGRATE_CACHE", Path(__file__).resolve().parent.parent / ".cache"))


SMOKE_FLAGS = ("--smoke", "--no-smoke", "--smoke-only")


def moe_migrate(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run the real entry point (``python -m moe_migrate``) and capture both streams.

    The smoke test is off unless a test asks for it (it has tests of its own, and costs
    seconds per run under Triton's interpreter).
    """
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    smoke = () if any(a in SMOKE_FLAGS for a in args) or "--version" in args else ("--no-smoke",)
    return subprocess.run(
        [sys.executable, "-m", "moe_migrate", *smoke, *args],
        cwd=cwd,
        capture_output=True,
        env=full_env,
        check=False,
    )


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (POSIX relative path -> bytes), caches left out."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def wheel_sources(name: str, version: str, package: str) -> Path:
    """A directory holding the ``package/**/*.py`` files of the PyPI wheel ``name==version``,
    downloaded once (``pip download``, no dependencies) and cached under :data:`CACHE`."""
    target = CACHE / f"{name}-{version}"
    if (target / package).is_dir():
        return target
    wheels = CACHE / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", f"{name}=={version}", "--no-deps",
         "--only-binary=:all:", "-d", str(wheels)],
        check=True,
    )
    [wheel] = wheels.glob(f"{name.replace('-', '_')}-{version}-*.whl")
    partial = target.with_suffix(".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(partial, [n for n in archive.namelist() if n.startswith(f"{package}/") and n.endswith(".py")])
    partial.rename(target)
    wheel.unlink()  # the sources are what we keep
    return target
