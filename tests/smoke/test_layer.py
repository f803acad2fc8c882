"""The bundled FusedMoE: vLLM's signature, routing semantics, and kernels against the reference.

Routing tests are hand-computed and need only torch. Layer tests compare ``forward`` (the
Triton kernels; the interpreter on CPU) with ``forward_reference`` (the per-expert torch loop).
"""

from __future__ import annotations

import importlib.util
import os

import pytest

torch = pytest.importorskip("torch")

from moe_migrate.smoke import routing  # noqa: E402
from moe_migrate.smoke.layer import (  # noqa: E402
    FusedMoE,
    backend_for,
    build_layer,
    constructor_parameters,
    init_weights,
)

SEED = 7

# fp32 everywhere; kernels and reference differ only in the order of fp32 sums.
FP32_TOL = {"atol": 1e-5, "rtol": 1e-5}
# bf16 on the GPU: the kernels round intermediate results to bf16, the reference does not.
BF16_TOL = {"atol": 2e-2, "rtol": 2e-2}

# vLLM 0.19.1's FusedMoE.__init__ keyword arguments, in order.
VLLM_KWARGS = (
    "num_experts", "top_k", "hidden_size", "intermediate_size", "params_dtype",
    "reduce_results", "renormalize", "use_grouped_topk", "num_expert_group", "topk_group",
    "quant_config", "tp_size", "ep_size", "dp_size", "pcp_size", "prefix",
    "custom_routing_function", "scoring_func", "routed_scaling_factor",
    "e_score_correction_bias", "apply_router_weight_on_input", "activation", "is_act_and_mul",
    "enable_eplb", "num_redundant_experts", "has_bias", "is_sequence_parallel",
    "expert_mapping", "n_shared_experts", "router_logits_dtype", "gate", "shared_experts",
    "routed_input_transform",
)


def routing_config(**kwargs) -> routing.RoutingConfig:
    return routing.RoutingConfig(**{"num_experts": 4, "top_k": 2, **kwargs})


# --------------------------------------------------------------------------------------
# Routing semantics, by hand
# --------------------------------------------------------------------------------------


def test_softmax_topk_renormalised():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    weights, ids = routing.select_experts(logits, logits, routing_config())
    probs = torch.softmax(logits, -1)[0]
    assert ids.tolist() == [[3, 2]] and ids.dtype == torch.int32
    expected = torch.stack([probs[3], probs[2]]) / (probs[3] + probs[2])
    torch.testing.assert_close(weights[0], expected)


def test_sigmoid_without_renormalisation():
    logits = torch.tensor([[0.5, -1.0, 2.0, 0.0]])
    config = routing_config(scoring_func="sigmoid", renormalize=False)
    weights, ids = routing.select_experts(logits, logits, config)
    assert ids.tolist() == [[2, 0]]
    torch.testing.assert_close(weights, torch.sigmoid(torch.tensor([[2.0, 0.5]])))


def test_plain_router_ignores_scaling_factor():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    plain, _ = routing.select_experts(logits, logits, routing_config())
    scaled, _ = routing.select_experts(logits, logits, routing_config(routed_scaling_factor=2.5))
    torch.testing.assert_close(plain, scaled)


def test_bias_chooses_but_does_not_weigh():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    bias = torch.tensor([0.0, 0.0, 0.0, 10.0])
    config = routing_config(scoring_func="sigmoid", renormalize=False, e_score_correction_bias=bias,
                            routed_scaling_factor=2.0)
    weights, ids = routing.select_experts(logits, logits, config)
    assert routing.router_kind(config) == "biased"
    assert ids.tolist() == [[3, 0]]  # expert 3 only wins through its bias
    torch.testing.assert_close(weights, 2.0 * torch.sigmoid(torch.tensor([[0.0, 3.0]])))


def test_grouped_topk_keeps_the_best_groups():
    # Groups {0,1}, {2,3}, {4,5}, {6,7} with maxima 4, 3.5, 0, 3; keep the best 2 groups.
    # Ungrouped, the top 3 would be experts 0, 2 and 7; grouped, 7 gives way to 3.
    logits = torch.tensor([[4.0, 0.0, 3.5, 2.0, 0.0, 0.0, 0.0, 3.0]])
    config = routing_config(num_experts=8, top_k=3, use_grouped_topk=True, num_expert_group=4,
                            topk_group=2, routed_scaling_factor=2.0)
    weights, ids = routing.select_experts(logits, logits, config)
    assert routing.router_kind(config) == "grouped"
    assert sorted(ids[0].tolist()) == [0, 2, 3]
    assert weights.sum().item() == pytest.approx(2.0)  # renormalised, then scaled


def test_grouped_topk_with_bias_scores_groups_by_their_two_best():
    # Biased group scores: {0,1} -> 0.9 (max 0.9 + 0.0), {2,3} -> 1.4 (0.7 + 0.7).
    scores = torch.tensor([[0.9, 0.0, 0.7, 0.7]])
    logits = torch.logit(scores.clamp(1e-6, 1 - 1e-6))
    config = routing_config(top_k=2, use_grouped_topk=True, num_expert_group=2, topk_group=1,
                            scoring_func="sigmoid", e_score_correction_bias=torch.zeros(4),
                            renormalize=False)
    weights, ids = routing.select_experts(logits, logits, config)
    assert sorted(ids[0].tolist()) == [2, 3]
    torch.testing.assert_close(weights, torch.tensor([[0.7, 0.7]]))


def test_grouping_that_does_not_divide_falls_back_to_softmax():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]])
    config = routing_config(num_experts=6, top_k=2, use_grouped_topk=True, num_expert_group=4,
                            topk_group=2, scoring_func="sigmoid")
    weights, ids = routing.select_experts(logits, logits, config)
    want_w, want_ids = routing.plain_topk(logits, 2, True, "softmax")
    assert ids.tolist() == want_ids.tolist()
    torch.testing.assert_close(weights, want_w)


def test_single_group_sigmoid_topk_falls_back_to_plain_router():
    config = routing_config(top_k=2, use_grouped_topk=True, num_expert_group=1, topk_group=1,
                            scoring_func="sigmoid")
    assert routing.router_kind(config) == "plain"


def test_custom_function_is_called_with_vllm_keywords():
    calls = []

    def route(hidden_states, gating_output, topk, renormalize):
        calls.append((hidden_states.shape, topk, renormalize))
        return torch.ones(gating_output.shape[0], topk, dtype=torch.float16), \
            torch.zeros(gating_output.shape[0], topk, dtype=torch.int64)

    hidden, logits = torch.zeros(3, 5), torch.zeros(3, 4)
    weights, ids = routing.select_experts(hidden, logits,
                                          routing_config(custom_routing_function=route))
    assert calls == [((3, 5), 2, True)]
    assert weights.dtype == torch.float32 and ids.dtype == torch.int32


def test_llama4_routing_is_sigmoid_of_the_top_logit():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.5]])
    weights, ids = routing.llama4_custom_routing(logits, logits, 1, False)
    assert ids.tolist() == [[1], [0]]
    torch.testing.assert_close(weights, torch.sigmoid(torch.tensor([[2.0], [3.0]])))


@pytest.mark.parametrize("config", [
    routing_config(),
    routing_config(num_experts=8, use_grouped_topk=True, num_expert_group=4, topk_group=2,
                   e_score_correction_bias=torch.zeros(8), scoring_func="sigmoid"),
], ids=["plain", "grouped"])
def test_zero_tokens_route_to_nothing(config):
    weights, ids = routing.select_experts(torch.zeros(0, 3), torch.zeros(0, config.num_experts),
                                          config)
    assert weights.shape == ids.shape == (0, config.top_k)


@pytest.mark.parametrize("kwargs, message", [
    (dict(scoring_func="tanh"), "scoring_func"),
    (dict(top_k=5), "top_k"),
    (dict(use_grouped_topk=True), "num_expert_group"),
    (dict(e_score_correction_bias=torch.zeros(3)), "e_score_correction_bias"),
])
def test_invalid_configs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        routing.check_config(routing_config(**kwargs))


# --------------------------------------------------------------------------------------
# Construction
# --------------------------------------------------------------------------------------


def test_signature_is_vllms():
    assert constructor_parameters() == VLLM_KWARGS


def test_weights_have_vllms_shapes():
    layer = FusedMoE(num_experts=4, top_k=2, hidden_size=32, intermediate_size=24, has_bias=True)
    shapes = {name: tuple(p.shape) for name, p in layer.named_parameters()}
    assert shapes == {"w13_weight": (4, 48, 32), "w2_weight": (4, 32, 24),
                      "w13_bias": (4, 48), "w2_bias": (4, 32)}
    gateless = FusedMoE(num_experts=4, top_k=2, hidden_size=32, intermediate_size=24,
                        activation="relu2", is_act_and_mul=False)
    assert tuple(gateless.w13_weight.shape) == (4, 24, 32)
    assert gateless.activation.name == "relu2_no_mul"


def test_init_weights_is_deterministic():
    kwargs = dict(num_experts=4, top_k=2, hidden_size=32, intermediate_size=24)
    a, b = build_layer(kwargs, seed=3), build_layer(kwargs, seed=3)
    c = build_layer(kwargs, seed=4)
    assert torch.equal(a.w13_weight, b.w13_weight) and torch.equal(a.w2_weight, b.w2_weight)
    assert not torch.equal(a.w13_weight, c.w13_weight)


def test_ignored_arguments_are_noted():
    layer = FusedMoE(num_experts=4, top_k=2, hidden_size=32, intermediate_size=24,
                     params_dtype=torch.float32, quant_config="fp8", tp_size=2, ep_size=1,
                     enable_eplb=True, reduce_results=True, prefix="model.layers.3.mlp.experts")
    assert layer.notes == [
        "quantization requested (quant_config='fp8'): ignored, weights are float32",
        "parallelism requested (tp_size=2): ignored, one device",
        "expert load balancing requested (enable_eplb=True, num_redundant_experts=0): ignored",
    ]
    assert layer.layer_name == "model.layers.3.mlp.experts"
    assert FusedMoE(num_experts=4, top_k=2, hidden_size=32, intermediate_size=24).notes == []


def test_unknown_routing_function_name_falls_back_with_a_note():
    layer = FusedMoE(num_experts=4, top_k=1, hidden_size=32, intermediate_size=24,
                     custom_routing_function="MyMoE.route")
    assert layer.router == "plain"
    assert "'MyMoE.route' is unknown" in layer.notes[0]
    llama = FusedMoE(num_experts=4, top_k=1, hidden_size=32, intermediate_size=24,
                     custom_routing_function="Llama4MoE.custom_routing_function")
    assert llama.routing.custom_routing_function is routing.llama4_custom_routing


def test_device_and_backend_are_reported():
    layer = FusedMoE(num_experts=4, top_k=2, hidden_size=32, intermediate_size=24)
    assert layer.device == torch.device("cpu")
    assert layer.backend == "triton-interpreter" == backend_for("cpu")
    assert layer.describe()["router"] == "plain"


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="unsupported activation"):
        FusedMoE(num_experts=4, top_k=2, hidden_size=32, intermediate_size=24, activation="tanh")


# --------------------------------------------------------------------------------------
# Forward: kernels against the reference
# --------------------------------------------------------------------------------------

HIDDEN, INTER, EXPERTS = 48, 40, 8


class SharedMLP(torch.nn.Module):
    """A shared expert as models write it: a small gated MLP."""

    def __init__(self, hidden: int, inter: int):
        super().__init__()
        self.gate_up = torch.nn.Linear(hidden, 2 * inter, bias=False)
        self.down = torch.nn.Linear(inter, hidden, bias=False)

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(torch.nn.functional.silu(gate) * up)


class ReplicatedLinear(torch.nn.Linear):
    """vLLM's linear layers return (output, bias)."""

    def forward(self, x):
        return super().forward(x), None


def base(**kwargs):
    return {"num_experts": EXPERTS, "top_k": 2, "hidden_size": HIDDEN,
            "intermediate_size": INTER, "params_dtype": torch.float32, **kwargs}


# Configurations shaped like the models that use them (small sizes, same routing).
LAYER_CONFIGS = {
    "mixtral-softmax": base(),
    "sigmoid-no-renorm": base(scoring_func="sigmoid", renormalize=False),
    "deepseek-v3-grouped-bias": base(
        top_k=3, use_grouped_topk=True, num_expert_group=4, topk_group=2, scoring_func="sigmoid",
        e_score_correction_bias=torch.linspace(-0.2, 0.2, EXPERTS), routed_scaling_factor=2.5),
    "deepseek-v2-grouped-softmax": base(use_grouped_topk=True, num_expert_group=2, topk_group=1,
                                        renormalize=False, routed_scaling_factor=16.0),
    "biased-topk-scaled": base(e_score_correction_bias=torch.linspace(0.3, -0.3, EXPERTS),
                               routed_scaling_factor=1.5),
    "llama4-custom-callable": base(top_k=1, custom_routing_function=routing.llama4_custom_routing,
                                   apply_router_weight_on_input=True, renormalize=False),
    "llama4-custom-by-name": base(top_k=1, apply_router_weight_on_input=True,
                                  custom_routing_function="Llama4MoE.custom_routing_function"),
    "gelu": base(activation="gelu"),
    "gpt-oss-swigluoai-bias": base(top_k=4, activation="swigluoai", has_bias=True),
    "nemotron-relu2-no-mul": base(activation="relu2", is_act_and_mul=False,
                                  scoring_func="sigmoid", use_grouped_topk=True,
                                  num_expert_group=2, topk_group=2,
                                  e_score_correction_bias=torch.zeros(EXPERTS)),
    "top-k-equals-experts": base(num_experts=4, top_k=4),
    "quantised-and-parallel-args": base(quant_config="fp8", tp_size=8, enable_eplb=True),
}


requires_triton = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="needs triton (the smoke extra)"
)
# CPU layers run the kernels under the interpreter, which conftest.py switches on only
# where there is no CUDA device (kernels compiled for a GPU cannot take CPU tensors).
cpu_kernels = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None or os.environ.get("TRITON_INTERPRET") != "1",
    reason="needs triton and TRITON_INTERPRET=1 (set by conftest without CUDA)",
)


def build(kwargs):
    return build_layer(kwargs, seed=SEED)


def inputs(tokens, hidden=HIDDEN, experts=EXPERTS):
    gen = torch.Generator().manual_seed(SEED + tokens)
    return torch.randn(tokens, hidden, generator=gen), torch.randn(tokens, experts, generator=gen)


@cpu_kernels
@pytest.mark.parametrize("name", LAYER_CONFIGS)
def test_forward_matches_reference(name):
    kwargs = LAYER_CONFIGS[name]
    layer = build(kwargs)
    x, logits = inputs(33, experts=kwargs["num_experts"])
    out = layer(x, logits)
    assert out.shape == x.shape
    torch.testing.assert_close(out, layer.forward_reference(x, logits), **FP32_TOL)


@cpu_kernels
@pytest.mark.parametrize("tokens", [0, 1])
def test_zero_and_one_token(tokens):
    layer = build(LAYER_CONFIGS["deepseek-v3-grouped-bias"])
    x, logits = inputs(tokens)
    out = layer(x, logits)
    assert out.shape == (tokens, HIDDEN)
    torch.testing.assert_close(out, layer.forward_reference(x, logits), **FP32_TOL)


@cpu_kernels
def test_shared_experts_are_added_and_gate_computes_logits():
    shared = SharedMLP(HIDDEN, 16)
    gate = ReplicatedLinear(HIDDEN, EXPERTS, bias=False)
    layer = build(base(shared_experts=shared, gate=gate))
    plain = FusedMoE(**base())
    plain.load_state_dict({k: v for k, v in layer.state_dict().items() if k.startswith("w")})
    x, ignored_logits = inputs(9)

    out = layer(x, ignored_logits)  # vLLM calls its own gate when shared experts run
    with torch.no_grad():
        logits = gate(x)[0]
        expected = plain.forward_reference(x, logits) + shared(x)
    torch.testing.assert_close(out, expected, **FP32_TOL)
    torch.testing.assert_close(out, layer.forward_reference(x), **FP32_TOL)


@cpu_kernels
def test_routed_input_transform_feeds_routed_experts_only():
    latent = 32
    transform = ReplicatedLinear(HIDDEN, latent, bias=False)
    shared = torch.nn.Linear(HIDDEN, latent, bias=False)  # lands in the latent width here
    layer = build(base(hidden_size=latent, routed_input_transform=transform,
                       shared_experts=shared))
    x, logits = inputs(9)
    out = layer(x, logits)
    assert out.shape == (9, latent)
    torch.testing.assert_close(out, layer.forward_reference(x, logits), **FP32_TOL)


@cpu_kernels
def test_gate_needed_without_logits():
    layer = build(base())
    with pytest.raises(ValueError, match="no gate"):
        layer(*inputs(3)[:1])


def test_unknown_backend_is_refused():
    layer = build(base())
    with pytest.raises(ValueError, match="unknown backend"):
        layer.run(*inputs(3), backend="cutlass")


# --------------------------------------------------------------------------------------
# GPU, bf16
# --------------------------------------------------------------------------------------


@requires_triton
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["deepseek-v3-grouped-bias", "gpt-oss-swigluoai-bias",
                                  "llama4-custom-callable", "nemotron-relu2-no-mul"])
def test_gpu_bf16_forward_matches_reference(name):
    kwargs = {**LAYER_CONFIGS[name], "params_dtype": torch.bfloat16}
    layer = init_weights(FusedMoE(**kwargs), SEED, device="cuda")
    x, logits = (t.to("cuda", torch.bfloat16) for t in inputs(65))
    assert layer.backend == "triton"
    torch.testing.assert_close(layer(x, logits), layer.forward_reference(x, logits), **BF16_TOL)
