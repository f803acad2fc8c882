"""On the real thing: the Python sources of the vLLM 0.19.1 wheel (downloaded once, cached),
the last release with ``SharedFusedMoE``, and of 0.20.0, the release that removed it.

Marked ``vllm``; run by CI. Each wheel (~240 MB) is fetched with pip into ``.cache/`` (or
``$MOE_MIGRATE_CACHE``) and only its ``vllm/**/*.py`` files are kept.
"""

from __future__ import annotations

import ast
import difflib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import moe_migrate, wheel_sources

pytestmark = pytest.mark.vllm

VERSION = "0.19.1"
#: The release that removed ``SharedFusedMoE``: what a migrated tree will run against.
NEXT = "0.20.0"
MIGRATION_LINE = re.compile(r"SharedFusedMoE|shared_fused_moe|__name__|is_moe_layer|^\s*(?:if \(|\)|\(|)\s*$")


def _sources(version: str = VERSION) -> Path:
    return wheel_sources("vllm", version, "vllm")


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    original = _sources() / "vllm"
    tree = tmp_path_factory.mktemp("vllm") / "vllm"
    shutil.copytree(original, tree)
    result = moe_migrate("--output-format", "json", str(tree))
    return original, tree, result


def _pyflakes(path: Path) -> set[str]:
    out = subprocess.run([sys.executable, "-m", "pyflakes", str(path)], capture_output=True, text=True)
    # Drop positions: lines move; what matters is which messages exist.
    return {re.sub(r"^[^:]*:\d+:\d+:? ", "", line) for line in out.stdout.splitlines()}


def test_removal_on_vllm_sources(migrated) -> None:
    original, tree, result = migrated
    assert result.returncode == 1, result.stderr.decode()[-3000:]  # the precondition fires
    report = json.loads(result.stdout)
    status = {f["path"]: f["status"] for f in report["files"]}
    assert status["model_executor/layers/fused_moe/shared_fused_moe.py"] == "deleted"
    assert not (tree / "model_executor/layers/fused_moe/shared_fused_moe.py").exists()
    assert report["summary"]["failed"] == 0

    utils = (tree / "utils/__init__.py").read_text()
    assert utils.count("def is_moe_layer(") == 1
    for path in ("distributed/device_communicators/base_device_communicator.py", "distributed/elastic_ep/elastic_execute.py"):
        text = (tree / path).read_text()
        assert "is_moe_layer(module)" in text and "from vllm.utils import is_moe_layer" in text
    assert (tree / "lora/model_manager.py").read_bytes() == (original / "lora/model_manager.py").read_bytes()


def test_no_reference_to_the_class_is_left_in_code(migrated) -> None:
    _, tree, _ = migrated
    for path in tree.rglob("*.py"):
        source = path.read_bytes()
        if b"SharedFusedMoE" not in source:
            continue
        for node in ast.walk(ast.parse(source)):
            name = getattr(node, "id", None) or getattr(node, "attr", None) or getattr(node, "name", None)
            assert name != "SharedFusedMoE", f"{path}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert node.value not in ("SharedFusedMoE",), f"{path}:{node.lineno}"


def test_changed_files_compile_and_pyflakes_finds_nothing_new(migrated) -> None:
    original, tree, result = migrated
    report = json.loads(result.stdout)
    changed = [f["path"] for f in report["files"] if f["status"] == "changed"]
    assert len(changed) >= 25
    for path in changed:
        compile((tree / path).read_bytes(), path, "exec")
        new = _pyflakes(tree / path) - _pyflakes(original / path)
        assert not new, f"{path}: {new}"


def test_only_migration_lines_change(migrated) -> None:
    original, tree, result = migrated
    for entry in json.loads(result.stdout)["files"]:
        if entry["status"] != "changed":
            continue
        before = (original / entry["path"]).read_text().splitlines()
        after = (tree / entry["path"]).read_text().splitlines()
        for line in difflib.ndiff(before, after):
            if line.startswith("- "):
                assert MIGRATION_LINE.search(line[2:]), f"{entry['path']}: {line}"


def test_precondition_and_dependent_call_sites_are_reported(migrated) -> None:
    _, _, result = migrated
    findings = json.loads(result.stdout)["findings"]
    [definition] = [f for f in findings if f["rule"] == "shared-fused-moe-not-trivial"]
    assert definition["path"] == "model_executor/layers/fused_moe/shared_fused_moe.py"
    assert "(shared_out, fused_out)" in definition["message"]
    sites = {f"{f['path']}:{f['line']}" for f in findings if f["rule"] == "moe-output-tuple"}
    assert {s.split(":")[0] for s in sites} >= {"model_executor/models/deepseek_v2.py", "model_executor/models/llama4.py"}
    assert len(sites) >= 20
    assert all(site in definition["message"] for site in sites)


def test_the_release_that_removed_the_class_needs_nothing(tmp_path) -> None:
    """vLLM 0.20.0, migrated upstream by hand: nothing to rewrite and nothing to report."""
    tree = tmp_path / "vllm"  # out of .cache/, which .gitignore hides from the run
    shutil.copytree(_sources(NEXT) / "vllm", tree)
    result = moe_migrate("--check", "--output-format", "json", str(tree))
    report = json.loads(result.stdout)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert report["summary"]["scanned"] > 1700 and report["summary"]["analysed"] > 0
    assert [f for f in report["files"] if f["status"] != "unchanged"] == []
    assert report["findings"] == []


def test_migrated_call_sites_fit_the_next_release_s_fused_moe(migrated) -> None:
    """Every ``FusedMoE(...)`` the migration leaves passes only arguments that 0.20.0's
    ``FusedMoE.__init__`` accepts, but one: ``reduce_results=``, which the same release removed
    from ``FusedMoE`` in another change (vLLM PR #35949, the layer now decides its all-reduce
    itself), for ``FusedMoE`` sites as much as for renamed ones. No rule handles that yet."""
    from moe_migrate.smoke.signature import check_sites, signature_from_source
    from moe_migrate.smoke.sites import find_sites

    _, tree, _ = migrated
    layer = _sources(NEXT) / "vllm/model_executor/layers/fused_moe/layer.py"
    signature = signature_from_source(layer.read_bytes(), f"vllm {NEXT}")
    assert signature is not None and signature.accepts("shared_experts")
    sources = {p.relative_to(tree).as_posix(): p.read_bytes() for p in tree.rglob("*.py")}
    sites = find_sites({path: data for path, data in sources.items() if b"FusedMoE" in data})
    assert len(sites) >= 30
    assert {site.path for site in sites} >= {"model_executor/models/deepseek_v2.py", "model_executor/models/llama4.py"}
    unknown = {f.message.split("`")[1] for f in check_sites(sites, signature)}
    assert unknown == {"reduce_results"}


def test_second_run_changes_nothing(migrated) -> None:
    _, tree, _ = migrated
    again = moe_migrate("--check", "--output-format", "json", str(tree))
    report = json.loads(again.stdout)
    assert [f for f in report["files"] if f["status"] != "unchanged"] == []


# Speed must not change results (issue 7) ---------------------------------------------------


def _candidates(root: Path, words: tuple[bytes, ...]) -> list[Path]:
    return [p for p in sorted(root.rglob("*.py")) if any(w in p.read_bytes() for w in words)]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """The sources outside the repository (discovery skips what git ignores, as .cache is)."""
    tree = tmp_path_factory.mktemp("pristine") / "vllm"
    shutil.copytree(_sources() / "vllm", tree)
    return tree


def test_the_prefilter_changes_nothing_on_vllm(pristine: Path) -> None:
    """Every file parsed (no byte prefilter) gives the same edits, findings and failures."""
    from moe_migrate import rules
    from moe_migrate.codemod.run import build_plan

    tree = pristine
    ids = list(rules.RULE_IDS)
    fast = build_plan([tree], ids)
    full = build_plan([tree], ids, prefilter=False)
    assert len(full.outcomes) == full.scanned > 1500 > len(fast.outcomes)
    assert fast.edits == full.edits
    assert fast.findings == full.findings
    assert fast.failures == full.failures


def _sliced_as_whole(root: Path) -> int:
    """Each file under ``root/vllm`` that passes the prefilter, sliced and whole: the same
    outcome, byte for byte. Returns how many were compared."""
    from moe_migrate import rules
    from moe_migrate.codemod.context import FileContext
    from moe_migrate.codemod.discover import mentions, module_name
    from moe_migrate.codemod.transform import migrate_source

    ids = list(rules.RULE_IDS)
    loaded, focus = [rules.load(r) for r in ids], rules.focus(ids)
    triggers = [t for r in ids for t in rules.spec(r).triggers]
    files = [p for p in sorted((root / "vllm").rglob("*.py")) if mentions(p.read_bytes(), triggers)]
    for path in files:
        module, is_package = module_name(path)
        context = FileContext(path.relative_to(root).as_posix(), module, is_package)
        source = path.read_bytes()
        assert migrate_source(source, loaded, context, focus) == migrate_source(source, loaded, context), path
    return len(files)


def test_slicing_changes_nothing_on_vllm() -> None:
    assert _sliced_as_whole(_sources()) > 30


def test_slicing_changes_nothing_after_the_migration(migrated) -> None:
    """The migrated tree and the release that removed the class: the files the rules still
    read there (layers built as ``FusedMoE(shared_experts=...)``) are sliced faithfully too."""
    _, tree, _ = migrated
    assert _sliced_as_whole(tree.parent) > 20
    assert _sliced_as_whole(_sources(NEXT)) > 20


def test_scopes_walk_and_positions_agree_with_libcst_on_vllm() -> None:
    """codemod.scopes and codemod.walk against LibCST's own, on the files the rules read."""
    import time

    import libcst as cst
    from test_scopes import _compare
    from test_walk import test_the_walk_and_the_positions_agree_with_libcst as _walk

    started = time.perf_counter()
    for path in _candidates(_sources() / "vllm", (b"SharedFusedMoE", b"FusedMoE'", b'FusedMoE"')):
        source = path.read_bytes()
        _compare(source.decode("utf-8"))
        _walk(path, source, cst.parse_module(source))
    print(f"compared in {time.perf_counter() - started:.1f} s")
