"""Host wrappers for the fused MoE kernels: check, allocate, grid, launch.

``fused_experts`` is the entry point; the stage functions have the same names and
arguments as their plain-torch twins in reference.py, so each stage can be compared alone.
Shapes use the names of reference.py: T tokens, H hidden, I intermediate, E experts,
k = top_k, S = T * k routed slots.

On CUDA tensors the kernels are compiled. On CPU tensors they run only under Triton's
interpreter, which must have been switched on (``TRITON_INTERPRET=1``) before this module
was first imported; ``interpreted()`` says which mode the kernels were built in.

Nothing in this file syncs the device, so ``fused_experts`` can be captured in a CUDA graph.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import triton

from .kernels import activation as codes
from .kernels import moe_combine_kernel, moe_down_kernel, moe_gate_up_kernel
from .reference import Activation, ExpertGroups, resolve_activation

_ACTIVATION_CODES = {
    "silu": codes.SILU,
    "gelu": codes.GELU,
    "relu2": codes.RELU2,
    "swigluoai": codes.SWIGLUOAI,
    "swiglustep": codes.SWIGLUSTEP,
}


@dataclasses.dataclass(frozen=True)
class GemmConfig:
    """Tile sizes and launch options of one grouped GEMM launch."""

    BLOCK_SIZE_M: int
    BLOCK_SIZE_N: int
    BLOCK_SIZE_K: int
    GROUP_SIZE_M: int
    num_warps: int
    num_stages: int
    # Run an expert's last tile at BLOCK_SIZE_M / 2 rows when it has that few: with a few
    # hundred rows per expert, a full-height tail multiplies ~15% padding rows.
    SPLIT_TAIL: bool = False

    def launch_kwargs(self) -> dict[str, int]:
        return dataclasses.asdict(self)


# Compiled kernels: per GEMM, by the most rows an expert is expected to get (S / E). Small
# tiles while streaming the weights bounds the time; large ones once the experts are busy
# enough for the tensor cores to matter. The gate/up kernel keeps two accumulators (gate and
# up), so its N tile stays at 128. SPLIT_TAIL pays off for gate/up only with a few hundred
# rows per expert (V2-Lite at 4096 tokens, 384 rows: 590 -> 576 us) and costs 6% at 128 rows
# (V3 at 4096 tokens); for down it pays off at both (341 -> 298 us, 3297 -> 3073 us).
# Chosen from `bench_kernels.py --sweep` on an H100 (benchmarks/RESULTS.md).
GPU_CONFIGS: dict[str, tuple[tuple[float, GemmConfig], ...]] = {
    "gate_up": (
        (16, GemmConfig(16, 64, 128, 1, num_warps=4, num_stages=4)),
        (64, GemmConfig(32, 64, 128, 1, num_warps=4, num_stages=4)),
        (256, GemmConfig(128, 128, 64, 8, num_warps=8, num_stages=4)),
        (math.inf, GemmConfig(128, 128, 64, 8, num_warps=8, num_stages=4, SPLIT_TAIL=True)),
    ),
    "down": (
        (16, GemmConfig(16, 64, 128, 1, num_warps=4, num_stages=4)),
        (64, GemmConfig(32, 64, 128, 1, num_warps=4, num_stages=4)),
        (math.inf, GemmConfig(128, 256, 64, 8, num_warps=8, num_stages=4, SPLIT_TAIL=True)),
    ),
}

# Under the interpreter every program runs in Python: few tiles keep the tests fast, while
# sizes such as 33 or 48 (and 96 for a second K step) still leave partial tiles to mask.
INTERPRETER_CONFIG = GemmConfig(16, 64, 64, 4, num_warps=1, num_stages=1, SPLIT_TAIL=True)
COMBINE_BLOCK_SIZE_N = 1024
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def interpreted() -> bool:
    """True when the kernels were built for Triton's interpreter (CPU tensors)."""
    return not isinstance(moe_gate_up_kernel, triton.runtime.JITFunction)


def pick_config(gemm: str, num_slots: int, num_experts: int) -> GemmConfig:
    """Tiles for GEMM "gate_up" or "down" over ``num_slots`` slots spread over ``num_experts``."""
    if interpreted():
        return INTERPRETER_CONFIG
    rows_per_expert = num_slots / max(num_experts, 1)
    return next(config for bound, config in GPU_CONFIGS[gemm] if rows_per_expert <= bound)


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------


def fused_experts(
    hidden_states: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    *,
    activation: Activation | str = "silu",
    w13_bias: torch.Tensor | None = None,
    w2_bias: torch.Tensor | None = None,
    apply_router_weight_on_input: bool = False,
) -> torch.Tensor:
    """out [T, H] = sum over k of weight * down(act(gate_up(x))), through the Triton kernels."""
    act = resolve_activation(activation) if isinstance(activation, str) else activation
    check_inputs(hidden_states, w13, w2, topk_weights, topk_ids, act, w13_bias, w2_bias)
    num_tokens, top_k = topk_ids.shape
    if num_tokens == 0:
        return hidden_states.new_empty((0, w2.shape[1]))

    groups = group_tokens(topk_ids, w13.shape[0])
    h = grouped_gate_up(
        hidden_states, w13, groups, topk_weights, top_k,
        activation=act, w13_bias=w13_bias,
        apply_router_weight_on_input=apply_router_weight_on_input,
    )
    y = grouped_down(
        h, w2, groups, topk_weights,
        w2_bias=w2_bias, mul_routed_weight=not apply_router_weight_on_input,
    )
    # With one slot per token, slot order is token order: nothing left to sum.
    return y if top_k == 1 else combine_topk(y, top_k)


def check_inputs(
    hidden_states: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    activation: Activation,
    w13_bias: torch.Tensor | None,
    w2_bias: torch.Tensor | None,
) -> None:
    """Raise ValueError (shapes, dtypes, devices) or RuntimeError (backend) before any launch."""
    num_experts, w13_rows, hidden = w13.shape
    inter = w2.shape[2]
    expected = {
        "hidden_states": (hidden_states.shape, (hidden_states.shape[0], hidden)),
        "w13": (w13.shape, (num_experts, 2 * inter if activation.gated else inter, hidden)),
        "w2": (w2.shape, (num_experts, hidden, inter)),
        "topk_weights": (topk_weights.shape, topk_ids.shape),
        "topk_ids rows": (topk_ids.shape[:1], hidden_states.shape[:1]),
    }
    if w13_bias is not None:
        expected["w13_bias"] = (w13_bias.shape, (num_experts, w13_rows))
    if w2_bias is not None:
        expected["w2_bias"] = (w2_bias.shape, (num_experts, hidden))
    for name, (got, want) in expected.items():
        if tuple(got) != tuple(want):
            raise ValueError(f"{name} has shape {tuple(got)}, expected {tuple(want)}")
    if topk_ids.dim() != 2 or topk_ids.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"topk_ids must be [T, k] int32/int64, got {topk_ids.dtype}")
    if hidden_states.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"dtype {hidden_states.dtype} unsupported; use one of {SUPPORTED_DTYPES}")
    if w13.dtype != hidden_states.dtype or w2.dtype != hidden_states.dtype:
        raise ValueError(
            f"dtypes differ: hidden_states {hidden_states.dtype}, w13 {w13.dtype}, w2 {w2.dtype}"
        )
    tensors = [hidden_states, w13, w2, topk_weights, topk_ids, w13_bias, w2_bias]
    devices = {t.device for t in tensors if t is not None}
    if len(devices) != 1:
        raise ValueError(f"tensors are on several devices: {sorted(map(str, devices))}")
    if hidden_states.device.type == "cpu" and not interpreted():
        raise RuntimeError(
            "CPU tensors need Triton's interpreter: set TRITON_INTERPRET=1 before "
            "moe_migrate.smoke.launch is first imported"
        )


# --------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------


def group_tokens(topk_ids: torch.Tensor, num_experts: int) -> ExpertGroups:
    """topk_ids [T, k] -> ExpertGroups: a stable sort by expert, offsets by binary search.

    Up to 256 experts the sort keys are uint8: one radix pass instead of four (int32) or
    eight (int64).
    """
    flat = topk_ids.reshape(-1)
    keys = flat.to(torch.uint8) if num_experts <= 256 else flat
    sorted_ids, order = torch.sort(keys, stable=True)
    starts = torch.searchsorted(
        sorted_ids, torch.arange(num_experts, dtype=keys.dtype, device=keys.device),
        out_int32=True,
    )
    offsets = torch.cat([starts, starts.new_full((1,), flat.numel())])
    return ExpertGroups(order, offsets)


def grouped_gate_up(
    hidden_states: torch.Tensor,
    w13: torch.Tensor,
    groups: ExpertGroups,
    topk_weights: torch.Tensor,
    top_k: int,
    *,
    activation: Activation,
    w13_bias: torch.Tensor | None = None,
    apply_router_weight_on_input: bool = False,
) -> torch.Tensor:
    """h [S, I]: row r is act(x[slot // k] @ w13[e].T + b) for slot = sorted_slots[r]."""
    num_slots = groups.sorted_slots.numel()
    num_experts = w13.shape[0]
    inter = w13.shape[1] // 2 if activation.gated else w13.shape[1]
    h = hidden_states.new_empty((num_slots, inter))
    if num_slots == 0:
        return h

    config = pick_config("gate_up", num_slots, num_experts)
    num_pid_m = _row_tiles_bound(num_slots, num_experts, config.BLOCK_SIZE_M)
    grid = (num_pid_m * triton.cdiv(inter, config.BLOCK_SIZE_N),)
    gate_step, up_offset = (2, 1) if activation.interleaved else (1, inter)
    bias = w13_bias if w13_bias is not None else w13  # never read without HAS_BIAS
    moe_gate_up_kernel[grid](
        hidden_states, w13, bias, _flat_weights(topk_weights),
        groups.sorted_slots, groups.expert_offsets, h,
        inter, hidden_states.shape[1], num_experts, top_k, num_pid_m,
        gate_step, up_offset,
        hidden_states.stride(0), hidden_states.stride(1),
        w13.stride(0), w13.stride(1), w13.stride(2),
        bias.stride(0), bias.stride(1),
        h.stride(0), h.stride(1),
        EXPERTS_POW2=triton.next_power_of_2(num_experts),
        EVEN_K=hidden_states.shape[1] % config.BLOCK_SIZE_K == 0,
        IS_GATED=activation.gated,
        ACTIVATION=_ACTIVATION_CODES[activation.name.removesuffix("_no_mul")],
        HAS_BIAS=w13_bias is not None,
        WEIGHT_ON_INPUT=apply_router_weight_on_input,
        DOT_PRECISION=_dot_precision(hidden_states.dtype),
        **config.launch_kwargs(),
    )
    return h


def grouped_down(
    h: torch.Tensor,
    w2: torch.Tensor,
    groups: ExpertGroups,
    topk_weights: torch.Tensor,
    *,
    w2_bias: torch.Tensor | None = None,
    mul_routed_weight: bool = True,
) -> torch.Tensor:
    """y [S, H] in slot order: y[sorted_slots[r]] = weight * (h[r] @ w2[e].T + b)."""
    num_slots = groups.sorted_slots.numel()
    num_experts, hidden, inter = w2.shape
    y = h.new_empty((num_slots, hidden))
    if num_slots == 0:
        return y

    config = pick_config("down", num_slots, num_experts)
    num_pid_m = _row_tiles_bound(num_slots, num_experts, config.BLOCK_SIZE_M)
    grid = (num_pid_m * triton.cdiv(hidden, config.BLOCK_SIZE_N),)
    bias = w2_bias if w2_bias is not None else w2  # never read without HAS_BIAS
    moe_down_kernel[grid](
        h, w2, bias, _flat_weights(topk_weights),
        groups.sorted_slots, groups.expert_offsets, y,
        hidden, inter, num_experts, num_pid_m,
        h.stride(0), h.stride(1),
        w2.stride(0), w2.stride(1), w2.stride(2),
        bias.stride(0), bias.stride(1),
        y.stride(0), y.stride(1),
        EXPERTS_POW2=triton.next_power_of_2(num_experts),
        EVEN_K=inter % config.BLOCK_SIZE_K == 0,
        HAS_BIAS=w2_bias is not None,
        MUL_ROUTED_WEIGHT=mul_routed_weight,
        DOT_PRECISION=_dot_precision(h.dtype),
        **config.launch_kwargs(),
    )
    return y


def combine_topk(y: torch.Tensor, top_k: int) -> torch.Tensor:
    """y [S, H] in slot order -> out [S / k, H]: the sum over each token's k slots."""
    num_tokens = y.shape[0] // top_k
    out = y.new_empty((num_tokens, y.shape[1]))
    if num_tokens == 0:
        return out
    block_n = min(triton.next_power_of_2(y.shape[1]), COMBINE_BLOCK_SIZE_N)
    grid = (num_tokens, triton.cdiv(y.shape[1], block_n))
    moe_combine_kernel[grid](
        y, out,
        y.shape[1], top_k,
        y.stride(0), y.stride(1),
        out.stride(0), out.stride(1),
        BLOCK_SIZE_N=block_n,
    )
    return out


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _row_tiles_bound(num_slots: int, num_experts: int, block_m: int) -> int:
    # Each non-empty expert wastes less than one tile: sum cdiv(n_e, M) <= cdiv(S, M) + min(E, S).
    return triton.cdiv(num_slots, block_m) + min(num_experts, num_slots)


def _flat_weights(topk_weights: torch.Tensor) -> torch.Tensor:
    return topk_weights.reshape(-1).to(torch.float32)


def _dot_precision(dtype: torch.dtype) -> str:
    # fp32 inputs: full-precision products, not TF32; 16-bit inputs ignore the setting.
    return "ieee" if dtype == torch.float32 else "tf32"
