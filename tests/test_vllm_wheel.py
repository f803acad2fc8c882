"""On the real thing: the Python sources of the vLLM 0.19.1 wheel (downloaded once, cached).

Marked ``vllm``; run by CI. The wheel (~430 MB) is fetched with pip into ``.cache/`` (or
``$MOE_MIGRATE_CACHE``) and only its ``vllm/**/*.py`` files are kept.
"""

from __future__ import annotations

import ast
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO
from helpers import moe_migrate

pytestmark = pytest.mark.vllm

VERSION = "0.19.1"
CACHE = Path(os.environ.get("MOE_MIGRATE_CACHE", REPO / ".cache"))
MIGRATION_LINE = re.compile(r"SharedFusedMoE|shared_fused_moe|__name__|is_moe_layer|^\s*(?:if \(|\)|\(|)\s*$")


def _sources() -> Path:
    target = CACHE / f"vllm-{VERSION}"
    if (target / "vllm" / "__init__.py").is_file():
        return target
    wheels = CACHE / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", f"vllm=={VERSION}", "--no-deps",
         "--only-binary=:all:", "-d", str(wheels)],
        check=True,
    )
    [wheel] = wheels.glob(f"vllm-{VERSION}-*.whl")
    partial = target.with_suffix(".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(partial, [n for n in archive.namelist() if n.startswith("vllm/") and n.endswith(".py")])
    partial.rename(target)
    wheel.unlink()  # the sources are what we keep
    return target


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


def test_second_run_changes_nothing(migrated) -> None:
    _, tree, _ = migrated
    again = moe_migrate("--check", "--output-format", "json", str(tree))
    report = json.loads(again.stdout)
    assert [f for f in report["files"] if f["status"] != "unchanged"] == []
