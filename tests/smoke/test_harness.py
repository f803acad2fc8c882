"""The smoke test end to end, on a small migrated tree that exists only in memory."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import pytest

from moe_migrate.smoke import harness

pytest.importorskip("torch")
pytest.importorskip("triton")

MODELS = "vllm/model_executor/models"

DEEPSEEK = """
from torch import nn
from vllm.model_executor.layers.fused_moe import FusedMoE

class DeepseekV2MoE(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.gate = GateLinear(config.hidden_size, config.n_routed_experts)
        if getattr(config, "topk_method", None) == "noaux_tc":
            self.gate.e_score_correction_bias = nn.Parameter(torch.empty(4))
        else:
            self.gate.e_score_correction_bias = None
        self.shared_experts = DeepseekV2MLP(config)
        self.experts = FusedMoE(
            shared_experts=self.shared_experts,
            gate=self.gate,
            num_experts=config.n_routed_experts,
            top_k=config.num_experts_per_tok,
            hidden_size=config.hidden_size,
            intermediate_size=config.moe_intermediate_size,
            renormalize=config.norm_topk_prob,
            use_grouped_topk=True,
            num_expert_group=getattr(config, "n_group", 1),
            topk_group=getattr(config, "topk_group", 1),
            scoring_func=getattr(config, "scoring_func", "softmax"),
            routed_scaling_factor=2.5,
            e_score_correction_bias=self.gate.e_score_correction_bias,
        )
"""

LLAMA4 = """
from vllm.model_executor.layers.fused_moe import FusedMoE as MoE

class Llama4MoE:
    def __init__(self, vllm_config):
        config = vllm_config.model_config.hf_config
        self.shared_expert = LlamaMLP(config)
        self.experts = MoE(
            shared_experts=self.shared_expert,
            num_experts=config.num_local_experts,
            top_k=config.num_experts_per_tok,
            hidden_size=config.hidden_size,
            custom_routing_function=Llama4MoE.custom_routing_function,
            intermediate_size=config.intermediate_size,
            apply_router_weight_on_input=True,
            renormalize=False,
        )
"""

GPT_OSS = """
from ..layers.fused_moe import FusedMoE

class MLPBlock:
    def __init__(self, config):
        self.experts = FusedMoE(
            num_experts=config.num_local_experts,
            top_k=config.num_experts_per_tok,
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            has_bias=True,
            activation="swigluoai",
            use_overlapped=False,
        )
"""

# Literal arguments vLLM itself would refuse: the case must be an error, never "passed".
BROKEN = """
from vllm.model_executor.layers.fused_moe import FusedMoE
experts = FusedMoE(num_experts=4, top_k=6, hidden_size=16, intermediate_size=8)
"""

TREE = {
    f"{MODELS}/deepseek_v2.py": DEEPSEEK,
    f"{MODELS}/llama4.py": LLAMA4,
    f"{MODELS}/gpt_oss.py": GPT_OSS,
    "plugin/broken_model.py": BROKEN,
    "README.md": "FusedMoE(",
}

CASE_KEYS = {
    "path", "line", "class", "model", "config", "assumed", "tokens", "max_error", "tolerance",
    "status", "device", "backend", "notes",
}


def sources(tree: dict[str, str]) -> dict[str, bytes]:
    return {path: textwrap.dedent(text).encode() for path, text in tree.items()}


@pytest.fixture(scope="module")
def report() -> harness.SmokeReport:
    return harness.run_smoke(sources(TREE), Path("/nonexistent"), device="cpu", tokens=5)


def test_smoke_available() -> None:
    assert harness.smoke_available() is None


def test_smoke_available_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "triton" else real(name)
    )
    reason = harness.smoke_available()
    assert reason is not None and reason.startswith("triton not installed")


def test_every_site_is_a_case_on_the_interpreter(report: harness.SmokeReport) -> None:
    assert [(c.path.rsplit("/", 1)[-1], c.status) for c in report.cases] == [
        ("broken_model.py", "error"),
        ("deepseek_v2.py", "passed"),
        ("gpt_oss.py", "passed"),
        ("llama4.py", "passed"),
    ]
    assert (report.device, report.backend, report.skipped_reason) == (
        "cpu", "triton-interpreter", None,
    )
    assert report.counts == {"passed": 3, "failed": 0, "error": 1}
    assert not report.ok
    for case in report.cases:
        assert (case.device, case.backend, case.tokens, case.dtype) == (
            "cpu", "triton-interpreter", 5, "float32",
        )


def test_passed_cases_compare_within_tolerance(report: harness.SmokeReport) -> None:
    for case in report.cases[1:]:
        assert case.max_error is not None and case.tolerance is not None
        assert 0 <= case.max_error <= case.tolerance < 1e-3
        assert case.assumed == ()


def test_resolved_configuration_reaches_the_layer(report: harness.SmokeReport) -> None:
    deepseek = report.cases[1]
    assert deepseek.config["e_score_correction_bias"] == "present"
    assert deepseek.config["use_grouped_topk"] is True
    llama4 = report.cases[3]
    assert llama4.config["custom_routing_function"] == "Llama4MoE.custom_routing_function"
    assert not any("unknown" in note for note in llama4.notes)


def test_error_case_says_why(report: harness.SmokeReport) -> None:
    broken = report.cases[0]
    assert (broken.max_error, broken.tolerance, broken.model) == (None, None, "default")
    assert any(note.startswith("ValueError: top_k=6") for note in broken.notes)


def test_signature_findings_come_with_the_report(report: harness.SmokeReport) -> None:
    (finding,) = report.findings
    assert finding.rule == "smoke-unknown-kwarg"
    assert finding.path.endswith("gpt_oss.py") and "use_overlapped" in finding.message


def test_json_report(report: harness.SmokeReport) -> None:
    data = report.to_json()
    assert data["summary"] == report.counts
    assert data["device"] == "cpu" and data["skipped_reason"] is None
    for case in data["cases"]:
        assert CASE_KEYS <= set(case)
    assert data["findings"][0]["rule"] == "smoke-unknown-kwarg"


def test_mismatch_is_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    from moe_migrate.smoke import layer

    real = layer.FusedMoE.forward_reference
    monkeypatch.setattr(
        layer.FusedMoE, "forward_reference", lambda self, *args: real(self, *args) + 0.5
    )
    tree = {f"{MODELS}/llama4.py": LLAMA4}
    (case,) = harness.run_smoke(sources(tree), Path("."), device="cpu", tokens=3).cases
    assert case.status == "failed"
    assert case.max_error == pytest.approx(0.5, abs=1e-3)


def test_zero_and_one_token() -> None:
    tree = {f"{MODELS}/mixtral.py": GPT_OSS.replace("use_overlapped=False,", "")}
    for tokens in (0, 1):
        (case,) = harness.run_smoke(sources(tree), Path("."), device="cpu", tokens=tokens).cases
        assert case.status == "passed", case.notes


def test_skipped_run_still_reports_findings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness, "smoke_available", lambda: "torch not installed")
    report = harness.run_smoke(sources(TREE), Path("."))
    assert report.skipped_reason == "torch not installed"
    assert report.cases == () and len(report.findings) == 1
    assert not report.ok and report.to_json()["summary"] == {"passed": 0, "failed": 0, "error": 0}


def test_cuda_asked_for_without_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    report = harness.run_smoke(sources(TREE), Path("."), device="cuda")
    assert report.skipped_reason is not None and "CUDA is not available" in report.skipped_reason


def test_tree_without_sites_imports_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness, "_prepare", lambda device: pytest.fail("imported torch"))
    report = harness.run_smoke({"a.py": b"x = 1\n"}, Path("."))
    assert report.cases == () and report.skipped_reason is None and report.ok
