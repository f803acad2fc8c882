"""Whole-tree and pre-commit timings of moe-migrate on the vLLM 0.19.1 sources.

    python benchmarks/bench_tree.py                 # the moe-migrate cases
    python benchmarks/bench_tree.py --libcst        # also LibCST's own codemod CLI rename (minutes)

Prints a Markdown table of medians (wall seconds) and peak memory (max RSS of the process
tree, from /usr/bin/time), every case measured in the same run so ratios are comparable on a
shared, noisy machine. The wheel's sources are fetched with pip into .cache/ (as the tests do).

Each case runs once untimed first (disk cache, bytecode), and the commands run with Python's
bytecode cache on, as an installed tool does: ``PYTHONDONTWRITEBYTECODE`` is removed from
their environment (with it, every run recompiles moe-migrate's modules: about 30 ms).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from test_vllm_wheel import _sources  # noqa: E402  (the tests' cached download)

from moe_migrate.codemod.discover import mentions  # noqa: E402
from moe_migrate.rules import CATALOG  # noqa: E402

MOE = [sys.executable, "-m", "moe_migrate", "--no-smoke", "--quiet"]


ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(command: list[str], cwd: Path, runs: int, warm: bool = True) -> tuple[float, float]:
    """Median wall seconds and max peak RSS (MB) over ``runs``, after one untimed run."""
    if warm:
        subprocess.run(command, cwd=cwd, capture_output=True, env=ENV)
    walls, peaks = [], []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(["/usr/bin/time", "-f", "%M", *command], cwd=cwd, capture_output=True, text=True, env=ENV)
        walls.append(time.perf_counter() - start)
        peaks.append(int(re.findall(r"^(\d+)$", done.stderr, re.M)[-1]) / 1024)
    return statistics.median(walls), max(peaks)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--libcst", action="store_true", help="also time LibCST's codemod CLI rename")
    parser.add_argument("--only", default="", help="run only the cases whose name contains this")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="moe-bench-"))
    tree = work / "vllm"
    shutil.copytree(_sources() / "vllm", tree)
    tens = work / "ten"
    for i in range(10):
        shutil.copytree(tree, tens / f"copy{i}" / "vllm")
    # Ten times the files, but only one copy has anything to migrate: the cost should follow
    # the files that need work, not the size of the tree.
    padded = work / "padded"
    shutil.copytree(tree, padded / "copy0" / "vllm")
    triggers = [t for spec in CATALOG for t in spec.triggers]
    for i in range(1, 10):
        shutil.copytree(tree, padded / f"copy{i}" / "vllm")
        for path in (padded / f"copy{i}").rglob("*.py"):
            if mentions(path.read_bytes(), triggers):
                path.unlink()
    plain = work / "plain.py"
    plain.write_text("import os\n\nprint(os.getcwd())\n")
    deepseek = tree / "model_executor/models/deepseek_v2.py"

    cases = [
        ("whole tree, --check (2 jobs)", [*MOE, "--check", str(tree)]),
        ("whole tree, --check -j 1", [*MOE, "--check", "-j", "1", str(tree)]),
        ("ten copies, --check", [*MOE, "--check", str(tens)]),
        ("ten copies, only one with triggers, --check", [*MOE, "--check", str(padded)]),
        ("pre-commit: one file, nothing to migrate", [*MOE, "--check", str(plain)]),
        ("pre-commit: deepseek_v2.py, --check", [*MOE, "--check", str(deepseek)]),
        ("pre-commit: deepseek_v2.py, --diff", [*MOE, "--diff", str(deepseek)]),
    ]
    if shutil.which("ast-grep"):  # not `sg`: on Debian that is the set-group command
        cases.append(("ast-grep rename (for scale)", ["ast-grep", "run", "-p", "SharedFusedMoE", "-r", "FusedMoE", "-l", "python", str(tree)]))
    if args.libcst:
        cases.append((
            "LibCST codemod CLI rename, --jobs=2",
            # The command comes first: libcst.tool reads the codemod's own options after it.
            [sys.executable, "-m", "libcst.tool", "codemod", "rename.RenameCommand",
             "--old_name", "vllm.model_executor.layers.fused_moe.SharedFusedMoE",
             "--new_name", "vllm.model_executor.layers.fused_moe.FusedMoE",
             "-j", "2", "--no-format", "--hide-progress", str(tree)],
        ))
    print(f"| case | median wall (s) | peak RSS (MB) | runs |\n|---|---:|---:|---:|")
    for name, command in cases:
        if args.only not in name:
            continue
        slow = "LibCST" in name  # minutes: one run, no untimed run first
        runs = 1 if slow else args.runs
        wall, peak = timed(command, work, runs, warm=not slow)
        print(f"| {name} | {wall:.3f} | {peak:.0f} | {runs} |", flush=True)
    shutil.rmtree(work)
    print(f"\nmachine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
