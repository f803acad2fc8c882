"""vLLM-shaped trees: the whole removal (issue: is_moe_layer and removing the class)."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import FIXTURES
from helpers import moe_migrate, tree_bytes

NONTRIVIAL = FIXTURES / "vllm-nontrivial"


@pytest.fixture
def nontrivial(tmp_path):
    target = tmp_path / "vllm-nontrivial"
    shutil.copytree(NONTRIVIAL, target)
    return target


def test_mini_tree_loses_the_module_and_gains_is_moe_layer() -> None:
    expected = tree_bytes(FIXTURES / "vllm-mini.expected")
    assert "vllm/model_executor/layers/fused_moe/shared_fused_moe.py" not in expected
    package = expected["vllm/model_executor/layers/fused_moe/__init__.py"]
    assert b"import SharedFusedMoE" not in package and b'"SharedFusedMoE"' not in package
    assert expected["vllm/utils/__init__.py"].count(b"def is_moe_layer(") == 1
    communicator = expected["vllm/distributed/device_communicators/base_device_communicator.py"]
    assert b"if is_moe_layer(module)" in communicator
    assert b"from vllm.utils import is_moe_layer" in communicator
    lora = expected["vllm/lora/model_manager.py"]
    assert lora == (FIXTURES / "vllm-mini/vllm/lora/model_manager.py").read_bytes()
    # Inside the package, the class comes from its own module: the package never imports itself.
    inside = expected["vllm/model_executor/layers/fused_moe/routed_experts.py"]
    assert b"from vllm.model_executor.layers.fused_moe.layer import FusedMoE" in inside


def test_is_moe_layer_is_a_real_bool_over_the_mro() -> None:
    source = (FIXTURES / "vllm-mini.expected/vllm/utils/__init__.py").read_text()
    helper = source[source.index("def is_moe_layer(") :]
    namespace: dict[str, object] = {"torch": pytest.importorskip("torch")}
    exec(helper, namespace)
    is_moe_layer = namespace["is_moe_layer"]

    class FusedMoE:
        pass

    class AriaFusedMoE(FusedMoE):
        pass

    class FusedMoEWithLoRA:
        pass

    assert is_moe_layer(FusedMoE()) is True
    assert is_moe_layer(AriaFusedMoE()) is True
    assert is_moe_layer(FusedMoEWithLoRA()) is False


def test_nontrivial_class_is_renamed_and_reported(nontrivial) -> None:
    result = moe_migrate("--output-format", "json", str(nontrivial))
    assert result.returncode == 1, result.stderr.decode()
    assert tree_bytes(nontrivial) == tree_bytes(FIXTURES / "vllm-nontrivial.expected")
    report = json.loads(result.stdout)
    found = [{k: f[k] for k in ("rule", "path", "line")} for f in report["findings"]]
    assert found == json.loads((FIXTURES / "vllm-nontrivial.findings.json").read_text())
    [definition] = [f for f in report["findings"] if f["path"].endswith("shared_fused_moe.py")]
    assert "(shared_out, fused_out)" in definition["message"] and "use_overlapped" in definition["message"]
    # The finding at the definition names the call sites that rely on it.
    assert "glm4_moe.py:28" in definition["message"] and "qwen2_moe.py:23" in definition["message"]


def test_trivial_class_is_not_reported(tmp_path) -> None:
    # The same call sites, but the tree's own class is the thin subclass: the definition is fine
    # (the call sites are still flagged by moe-output-tuple: they unpack a single tensor).
    target = tmp_path / "trivial"
    shutil.copytree(NONTRIVIAL, target)
    shutil.copy(
        FIXTURES / "vllm-mini/vllm/model_executor/layers/fused_moe/shared_fused_moe.py",
        target / "vllm/model_executor/layers/fused_moe/shared_fused_moe.py",
    )
    report = json.loads(moe_migrate("--check", "--output-format", "json", str(target)).stdout)
    assert [f for f in report["findings"] if f["rule"] == "shared-fused-moe-not-trivial"] == []


def test_second_run_changes_nothing_and_still_reports_the_unpacked_outputs(nontrivial) -> None:
    first = json.loads(moe_migrate("--output-format", "json", str(nontrivial)).stdout)
    again = moe_migrate("--check", "--output-format", "json", str(nontrivial))
    report = json.loads(again.stdout)
    assert [f["path"] for f in report["files"] if f["status"] != "unchanged"] == []
    # The renamed layers are FusedMoE(shared_experts=...), whose output is still unpacked: a
    # check after the rewrite must not go green before a human fixes that.
    def sites(run):
        return sorted(f["path"] for f in run["findings"] if f["rule"] == "moe-output-tuple")

    assert sites(report) == sites(first) != []
    assert again.returncode == 1


def test_removal_does_nothing_outside_vllms_own_tree(tmp_path) -> None:
    # A plugin tree: no vllm/model_executor/layers/fused_moe/shared_fused_moe.py of its own.
    models = tmp_path / "plugin" / "models"
    models.mkdir(parents=True)
    (tmp_path / "plugin" / "__init__.py").write_bytes(b"")
    (models / "__init__.py").write_bytes(b"")
    (models / "m.py").write_bytes(b"from vllm.model_executor.layers.fused_moe import SharedFusedMoE\n")
    report = json.loads(moe_migrate("--check", "--output-format", "json", str(tmp_path)).stdout)
    assert [(f["path"], f["status"], f["rules"]) for f in report["files"]] == [
        ("plugin/models/m.py", "changed", ["shared-fused-moe-import"])
    ]
