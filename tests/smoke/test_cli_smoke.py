"""The smoke test through the CLI: --smoke-only, --check --smoke, the JSON report, exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import moe_migrate, tree_bytes

pytest.importorskip("torch")
pytest.importorskip("triton")

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def test_smoke_only_passes_every_site_of_the_expected_tree() -> None:
    result = moe_migrate("--smoke-only", "--output-format", "json", str(FIXTURES / "vllm-mini.expected"))
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    smoke = json.loads(result.stdout)["smoke"]
    cases = smoke["cases"]
    assert len(cases) >= 6
    assert {c["status"] for c in cases} == {"passed"}
    for case in cases:
        assert {"path", "line", "class", "model", "config", "assumed", "tokens", "max_error",
                "tolerance", "status", "device", "backend"} <= set(case)
        assert case["backend"] in ("triton", "triton-interpreter")
    assert "deepseek_v2" in {c["model"] for c in cases}


def test_check_with_smoke_tests_the_proposed_sources_and_writes_nothing(tmp_path) -> None:
    tree = tmp_path / "mini"
    shutil.copytree(FIXTURES / "vllm-mini", tree)
    before = tree_bytes(tree)
    result = moe_migrate("--check", "--smoke", "--output-format", "json", str(tree))
    assert tree_bytes(tree) == before
    report = json.loads(result.stdout)
    assert result.returncode == 1  # there is something to rewrite
    paths = {c["path"] for c in report["smoke"]["cases"]}
    # The proposed FusedMoE(...) sites, which exist only in memory, were built and run.
    assert "vllm/model_executor/models/qwen2_moe.py" in paths
    assert {c["status"] for c in report["smoke"]["cases"]} == {"passed"}


def test_unknown_kwarg_is_a_finding_and_exit_1(tmp_path) -> None:
    # The tree's own FusedMoE signature, and one model passing what only SharedFusedMoE took.
    tree = tmp_path / "mini"
    for path in ("vllm/model_executor/layers/fused_moe/layer.py", "vllm/model_executor/models/qwen2_moe.py"):
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURES / "vllm-mini.expected" / path, tree / path)
    model = tree / "vllm/model_executor/models/qwen2_moe.py"
    model.write_text(model.read_text().replace("reduce_results=False,", "reduce_results=False,\n            use_overlapped=True,"))
    result = moe_migrate("--smoke-only", "--output-format", "json", str(tree))
    report = json.loads(result.stdout)
    assert result.returncode == 1
    assert any(f["rule"] == "smoke-unknown-kwarg" and "use_overlapped" in f["message"] for f in report["findings"])
