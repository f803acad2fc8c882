"""The Triton kernels against the plain-torch reference, stage by stage and end to end.

On a machine without CUDA the kernels run under Triton's interpreter (conftest.py switches
it on), in float32. Tests marked ``gpu`` run the compiled kernels in bfloat16.
"""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from moe_migrate.smoke import launch, reference  # noqa: E402

SEED = 7

# fp32 under the interpreter: the kernels and the reference differ only in the order of
# their fp32 sums (at most a few hundred terms of order one), so errors stay near 1e-6.
FP32_TOL = {"atol": 1e-5, "rtol": 1e-5}
# bf16 on the GPU: the kernels round h and each slot's output to bf16 (8 bits of mantissa,
# relative error 2^-9) before the next stage; the reference keeps fp32 until the end.
BF16_TOL = {"atol": 2e-2, "rtol": 2e-2}

# (tokens, hidden, intermediate, experts, top_k): awkward sizes leave partial tiles
# (33, 48, 40), 96 gives the K loop a second step, 4 experts with top_k 4 routes every token
# to every expert, 16 experts for 3 tokens leaves most experts without tokens.
SHAPES = [
    pytest.param(0, 32, 16, 4, 2, id="zero-tokens"),
    pytest.param(1, 32, 16, 4, 2, id="one-token"),
    pytest.param(33, 48, 40, 8, 2, id="awkward-33x48x40"),
    pytest.param(5, 96, 33, 4, 4, id="topk-equals-experts"),
    pytest.param(3, 64, 32, 16, 2, id="idle-experts"),
    pytest.param(17, 64, 24, 8, 1, id="top1-no-combine"),
]

ACTIVATIONS = ["silu", "gelu", "relu2", "swigluoai", "swiglustep",
               "silu_no_mul", "gelu_no_mul", "relu2_no_mul"]

# Where the kernels run here: CPU tensors under the interpreter, else CUDA.
KERNEL_DEVICE = "cpu" if launch.interpreted() else "cuda"

interpreter_only = pytest.mark.skipif(
    not launch.interpreted(), reason="CPU kernels need TRITON_INTERPRET=1 (set by conftest)"
)
requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available() or launch.interpreted(),
    reason="needs CUDA and compiled (not interpreted) kernels",
)


def make_case(tokens, hidden, inter, experts, top_k, *, activation="silu", bias=False,
              dtype=torch.float32, device="cpu", seed=SEED):
    """Random inputs of the given shape; weights scaled so outputs are of order one."""
    gen = torch.Generator().manual_seed(seed)
    act = reference.resolve_activation(activation)
    rows = 2 * inter if act.gated else inter

    def randn(*shape, scale=1.0):
        return (torch.randn(shape, generator=gen) * scale).to(device=device, dtype=dtype)

    logits = torch.randn(tokens, experts, generator=gen)
    weights, ids = torch.topk(torch.softmax(logits, dim=-1), top_k, dim=-1)
    return dict(
        hidden_states=randn(tokens, hidden),
        w13=randn(experts, rows, hidden, scale=hidden**-0.5),
        w2=randn(experts, hidden, inter, scale=inter**-0.5),
        topk_weights=weights.to(device),
        topk_ids=ids.to(device=device, dtype=torch.int32),
        activation=act,
        w13_bias=randn(experts, rows, scale=0.1) if bias else None,
        w2_bias=randn(experts, hidden, scale=0.1) if bias else None,
    )


def run_both(case, **kwargs):
    args = {**case, **kwargs}
    return launch.fused_experts(**args), reference.fused_experts(**args)


# --------------------------------------------------------------------------------------
# End to end, under the interpreter
# --------------------------------------------------------------------------------------


@interpreter_only
@pytest.mark.parametrize("tokens, hidden, inter, experts, top_k", SHAPES)
def test_fused_experts_matches_reference(tokens, hidden, inter, experts, top_k):
    out, ref = run_both(make_case(tokens, hidden, inter, experts, top_k))
    assert out.shape == (tokens, hidden)
    torch.testing.assert_close(out, ref, **FP32_TOL)


@interpreter_only
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_each_activation(activation):
    out, ref = run_both(make_case(9, 48, 40, 4, 2, activation=activation))
    torch.testing.assert_close(out, ref, **FP32_TOL)


@interpreter_only
@pytest.mark.parametrize("activation", ["silu", "swigluoai", "relu2_no_mul"])
def test_biases(activation):
    out, ref = run_both(make_case(11, 48, 40, 4, 2, activation=activation, bias=True))
    torch.testing.assert_close(out, ref, **FP32_TOL)


@interpreter_only
@pytest.mark.parametrize("top_k", [1, 2])
def test_router_weight_on_input(top_k):
    case = make_case(10, 48, 40, 4, top_k, bias=True)
    out, ref = run_both(case, apply_router_weight_on_input=True)
    torch.testing.assert_close(out, ref, **FP32_TOL)


@interpreter_only
def test_zero_tokens_give_an_empty_output():
    case = make_case(0, 32, 16, 4, 2)
    out = launch.fused_experts(**case)
    assert out.shape == (0, 32) and out.dtype == torch.float32


@interpreter_only
def test_every_slot_on_one_expert():
    case = make_case(6, 32, 16, 8, 2)
    case["topk_ids"] = torch.tensor([[5, 2]] * 6, dtype=torch.int32)
    out, ref = run_both(case)
    torch.testing.assert_close(out, ref, **FP32_TOL)


@interpreter_only
def test_int64_ids_and_strided_hidden_states():
    case = make_case(7, 48, 40, 4, 2)
    case["topk_ids"] = case["topk_ids"].long()
    case["hidden_states"] = torch.randn(48, 7).T  # non-contiguous rows
    out, ref = run_both(case)
    torch.testing.assert_close(out, ref, **FP32_TOL)


# --------------------------------------------------------------------------------------
# Stage by stage, under the interpreter
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("tokens, hidden, inter, experts, top_k", SHAPES)
def test_group_tokens_is_a_stable_sort_by_expert(tokens, hidden, inter, experts, top_k):
    ids = make_case(tokens, hidden, inter, experts, top_k, device=KERNEL_DEVICE)["topk_ids"]
    got = launch.group_tokens(ids, experts)
    want = reference.group_tokens(ids, experts)
    assert got.sorted_slots.tolist() == want.sorted_slots.tolist()
    assert got.expert_offsets.tolist() == want.expert_offsets.tolist()
    assert got.expert_offsets.dtype == torch.int32
    assert got.expert_offsets[-1].item() == tokens * top_k


# Many chunks of slots (64 here; the counts of earlier chunks offset later ones, and over 32
# chunks take two steps to add up), a number of experts that is no power of two, int64 ids,
# and experts left without slots.
@pytest.mark.parametrize("tokens, experts, top_k, id_dtype", [
    (90, 200, 8, torch.int64),
    (400, 64, 6, torch.int32),
    (150, 3, 2, torch.int32),
    (70, 256, 1, torch.int64),
])
def test_group_tokens_across_chunks(tokens, experts, top_k, id_dtype, monkeypatch):
    monkeypatch.setattr(launch, "GROUP_BLOCK_SIZE", 64)
    gen = torch.Generator().manual_seed(SEED)
    # Skewed routing: experts with many, few and no slots.
    logits = torch.randn(tokens, experts, generator=gen) * torch.linspace(0, 4, experts)
    ids = torch.topk(logits, top_k, dim=-1).indices.to(device=KERNEL_DEVICE, dtype=id_dtype)
    got = launch.group_tokens(ids, experts)
    want = reference.group_tokens(ids.cpu(), experts)
    assert got.sorted_slots.tolist() == want.sorted_slots.tolist()
    assert got.expert_offsets.tolist() == want.expert_offsets.tolist()


@interpreter_only
@pytest.mark.parametrize("activation", ["silu", "swigluoai", "gelu_no_mul"])
def test_grouped_gate_up(activation):
    case = make_case(33, 96, 40, 8, 2, activation=activation, bias=True)
    groups = launch.group_tokens(case["topk_ids"], 8)
    args = (case["hidden_states"], case["w13"], groups, case["topk_weights"], 2)
    kwargs = dict(activation=case["activation"], w13_bias=case["w13_bias"])
    torch.testing.assert_close(launch.grouped_gate_up(*args, **kwargs),
                               reference.grouped_gate_up(*args, **kwargs), **FP32_TOL)


@interpreter_only
@pytest.mark.parametrize("mul_routed_weight", [True, False])
def test_grouped_down(mul_routed_weight):
    case = make_case(33, 48, 40, 8, 2, bias=True)
    groups = launch.group_tokens(case["topk_ids"], 8)
    h = torch.randn(66, 40)
    args = (h, case["w2"], groups, case["topk_weights"])
    kwargs = dict(w2_bias=case["w2_bias"], mul_routed_weight=mul_routed_weight)
    torch.testing.assert_close(launch.grouped_down(*args, **kwargs),
                               reference.grouped_down(*args, **kwargs), **FP32_TOL)


@interpreter_only
@pytest.mark.parametrize("tokens, top_k, hidden", [(0, 2, 8), (1, 3, 1030), (9, 4, 33)])
def test_combine_topk(tokens, top_k, hidden):
    y = torch.randn(tokens * top_k, hidden)
    torch.testing.assert_close(launch.combine_topk(y, top_k),
                               reference.combine_topk(y, top_k), **FP32_TOL)


# --------------------------------------------------------------------------------------
# Every launch option, under the interpreter
# --------------------------------------------------------------------------------------

# Each code path of the GEMM kernels: pointer or descriptor (TMA) loads, one tile per program
# or PERSISTENT loops over tiles, all tiles at full height or tails at half height.
VARIANTS = [
    dict(USE_TMA=False, PERSISTENT=0, SPLIT_TAIL=False),
    dict(USE_TMA=False, PERSISTENT=1, SPLIT_TAIL=True),
    dict(USE_TMA=True, PERSISTENT=0, SPLIT_TAIL=True),
    dict(USE_TMA=True, PERSISTENT=1, SPLIT_TAIL=False),
    dict(USE_TMA=True, PERSISTENT=2, SPLIT_TAIL=True),
]


def _variant_id(flags):
    return "-".join(f"{name.lower()}{'' if on is True else on}"
                    for name, on in flags.items() if on) or "plain"


def force_config(monkeypatch, config):
    monkeypatch.setattr(launch, "pick_config", lambda *_: config)


@interpreter_only
@pytest.mark.parametrize("flags", VARIANTS, ids=_variant_id)
@pytest.mark.parametrize("tokens, hidden, inter, experts, top_k", [
    pytest.param(40, 96, 40, 4, 2, id="aligned"),    # h rows of 160 bytes: descriptors
    pytest.param(9, 48, 33, 4, 4, id="unaligned"),   # h rows of 132 bytes: pointers for h
    pytest.param(3, 64, 32, 16, 3, id="idle-experts"),
])
def test_launch_options(flags, tokens, hidden, inter, experts, top_k, monkeypatch):
    force_config(monkeypatch, dataclasses.replace(launch.INTERPRETER_CONFIG, **flags))
    for activation in ("silu", "swigluoai"):  # halves of w13, then interleaved (no TMA)
        case = make_case(tokens, hidden, inter, experts, top_k, activation=activation,
                         bias=True)
        out, ref = run_both(case)
        torch.testing.assert_close(out, ref, **FP32_TOL)


@interpreter_only
@pytest.mark.parametrize("flags", VARIANTS, ids=_variant_id)
def test_tiles_at_every_tail_length(flags, monkeypatch):
    # Experts of 0 rows, of a tail of 1, of exactly half a tile (8 rows: a half-height tail),
    # of half a tile plus one (a full-height one), of whole tiles, of whole tiles plus a tail.
    config = dataclasses.replace(launch.INTERPRETER_CONFIG, **flags)
    force_config(monkeypatch, config)
    rows = [0, 1, 8, 9, 16, 17, 24, 25, 40]
    assert config.BLOCK_SIZE_M == 16
    case = make_case(sum(rows), 48, 40, len(rows), 1, bias=True)
    ids = torch.repeat_interleave(torch.arange(len(rows)), torch.tensor(rows))
    case["topk_ids"] = ids[torch.randperm(len(ids), generator=torch.Generator().manual_seed(1))]
    case["topk_ids"] = case["topk_ids"][:, None].to(torch.int32)
    out, ref = run_both(case)
    torch.testing.assert_close(out, ref, **FP32_TOL)


def test_descriptors_only_where_the_copy_engine_can_read():
    assert launch._descriptor(torch.randn(8, 40, 48), [2, 64, 64]) is not None
    assert launch._descriptor(torch.randn(6, 40), [16, 32]) is not None  # rows of 160 bytes
    assert launch._descriptor(torch.randn(6, 33), [16, 32]) is None  # rows of 132 bytes
    assert launch._descriptor(torch.randn(6, 41)[:, 1:], [16, 32]) is None  # base off 16
    assert launch._descriptor(torch.randn(40, 6).T, [16, 32]) is None  # columns strided
    assert launch._descriptor(torch.randn(0, 40), [16, 32]) is None


# --------------------------------------------------------------------------------------
# Checks and configuration
# --------------------------------------------------------------------------------------


def test_mismatched_shapes_are_refused():
    case = make_case(4, 32, 16, 4, 2)
    case["w2"] = case["w2"][:, :, :8]
    with pytest.raises(ValueError, match="w13 has shape"):
        launch.fused_experts(**case)


def test_float64_is_refused():
    case = make_case(4, 32, 16, 4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="unsupported"):
        launch.fused_experts(**case)


def test_cpu_tensors_without_interpreter_are_refused(monkeypatch):
    monkeypatch.setattr(launch, "interpreted", lambda: False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        launch.fused_experts(**make_case(4, 32, 16, 4, 2))


@pytest.mark.parametrize("gemm", ["gate_up", "down"])
@pytest.mark.parametrize("slots, experts", [(6, 64), (2048, 256), (32768, 256), (24576, 64)])
def test_gpu_configs_have_power_of_two_tiles(gemm, slots, experts, monkeypatch):
    monkeypatch.setattr(launch, "interpreted", lambda: False)
    config = launch.pick_config(gemm, slots, experts)
    for size in (config.BLOCK_SIZE_M, config.BLOCK_SIZE_N, config.BLOCK_SIZE_K):
        assert size >= 16 and size & (size - 1) == 0


# --------------------------------------------------------------------------------------
# GPU, bf16
# --------------------------------------------------------------------------------------

GPU_SHAPES = [
    pytest.param(1, 2048, 1408, 64, 6, id="v2-lite-1"),
    pytest.param(16, 2048, 1408, 64, 6, id="v2-lite-16"),
    pytest.param(257, 2048, 1408, 64, 6, id="v2-lite-257"),
    pytest.param(33, 1000, 333, 8, 8, id="awkward-topk-equals-experts"),
    pytest.param(4096, 1024, 512, 16, 2, id="many-rows-per-expert"),
]


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("tokens, hidden, inter, experts, top_k", GPU_SHAPES)
@pytest.mark.parametrize("activation", ["silu", "swigluoai"])
def test_gpu_bf16_matches_reference(tokens, hidden, inter, experts, top_k, activation):
    case = make_case(tokens, hidden, inter, experts, top_k, activation=activation,
                     bias=activation == "swigluoai", dtype=torch.bfloat16, device="cuda")
    out, ref = run_both(case)
    torch.testing.assert_close(out, ref, **BF16_TOL)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("flags", VARIANTS, ids=_variant_id)
@pytest.mark.parametrize("tokens, hidden, inter, experts, top_k", [
    pytest.param(257, 2048, 1408, 64, 6, id="v2-lite-257"),
    pytest.param(2000, 1024, 512, 16, 4, id="many-rows-per-expert"),
    pytest.param(33, 1000, 333, 8, 8, id="awkward-topk-equals-experts"),
])
def test_gpu_launch_options(flags, tokens, hidden, inter, experts, top_k, monkeypatch):
    for gemm in ("gate_up", "down"):
        config = launch.GPU_CONFIGS[gemm][-1][1]  # the large tiles
        monkeypatch.setitem(launch.GPU_CONFIGS, gemm,
                            ((float("inf"), dataclasses.replace(config, **flags)),))
    case = make_case(tokens, hidden, inter, experts, top_k, dtype=torch.bfloat16,
                     device="cuda")
    out, ref = run_both(case)
    torch.testing.assert_close(out, ref, **BF16_TOL)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("tokens", [0, 1, 5])
def test_gpu_small_batches(tokens):
    case = make_case(tokens, 256, 96, 16, 4, dtype=torch.bfloat16, device="cuda")
    out, ref = run_both(case, apply_router_weight_on_input=False)
    torch.testing.assert_close(out, ref, **BF16_TOL)

