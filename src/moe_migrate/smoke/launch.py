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
import functools
import math

import torch
import triton
from triton.tools.tensor_descriptor import TensorDescriptor

from .kernels import activation as codes
from .kernels import (
    moe_combine_kernel,
    moe_count_kernel,
    moe_down_kernel,
    moe_gate_up_kernel,
    moe_scatter_kernel,
)
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
    # hundred rows per expert, a full-height tail multiplies ~15% padding rows. Its branch
    # keeps a PERSISTENT program's tiles from sharing one pipeline, which can gain more.
    SPLIT_TAIL: bool = False
    # Read the weights (and, in the down GEMM, h) through tensor descriptors (TMA) where
    # their layout allows it (16-byte aligned rows, gate and up as the two halves of w13).
    USE_TMA: bool = False
    # Launch this many programs per SM (0: one program per tile), each looping over tiles;
    # without SPLIT_TAIL the K loops of consecutive tiles are flattened into one pipeline.
    PERSISTENT: int = 0

    def launch_kwargs(self) -> dict[str, int | bool]:
        """The kernel's meta-parameters; USE_TMA the launcher resolves."""
        kwargs = dataclasses.asdict(self)
        del kwargs["USE_TMA"]
        kwargs["PERSISTENT"] = self.PERSISTENT > 0
        return kwargs


# Compiled kernels: per GEMM, by the most rows an expert is expected to get (S / E). Small
# tiles while streaming the weights bounds the time; large ones once the experts are busy
# enough for the tensor cores to matter. The gate/up kernel multiplies the gate and up
# columns in one product of twice BLOCK_SIZE_N, so its N tile stays at 128. Chosen on an H100
# at 4096 tokens, GEMM alone (benchmarks/RESULTS.md):
# - gate/up: PERSISTENT with TMA and no SPLIT_TAIL, so that the compiler flattens the K loops
#   of consecutive tiles into one pipeline (the next tile's loads overlap this one's epilogue)
#   and no program waits out a last partial wave. At 384 rows per expert (V2-Lite), 4 stages,
#   GROUP_SIZE_M 4: 498 us against 526 for one program per tile with SPLIT_TAIL (3 stages:
#   530). At 128 rows (V3), 3 stages, GROUP_SIZE_M 4: 6063 against 6323 (4 stages: 8262).
#   Before w13 was read through TMA, PERSISTENT had cost 10% or more at both sizes.
# - down at 128 rows (V3): SPLIT_TAIL and TMA, 3052 us (3913 PERSISTENT). At 384 rows
#   (V2-Lite): PERSISTENT with TMA and no SPLIT_TAIL, 269 us (GROUP_SIZE_M 4; 273 with 8),
#   against 294 for SPLIT_TAIL and TMA.
GPU_CONFIGS: dict[str, tuple[tuple[float, GemmConfig], ...]] = {
    "gate_up": (
        (16, GemmConfig(16, 64, 128, 1, num_warps=4, num_stages=4)),
        (64, GemmConfig(32, 64, 128, 1, num_warps=4, num_stages=4)),
        (256, GemmConfig(128, 128, 64, 4, num_warps=8, num_stages=3, USE_TMA=True,
                         PERSISTENT=1)),
        (math.inf, GemmConfig(128, 128, 64, 4, num_warps=8, num_stages=4, USE_TMA=True,
                              PERSISTENT=1)),
    ),
    "down": (
        (16, GemmConfig(16, 64, 128, 1, num_warps=4, num_stages=4)),
        (64, GemmConfig(32, 64, 128, 1, num_warps=4, num_stages=4)),
        (256, GemmConfig(128, 256, 64, 8, num_warps=8, num_stages=4, SPLIT_TAIL=True,
                         USE_TMA=True)),
        (math.inf, GemmConfig(128, 256, 64, 4, num_warps=8, num_stages=4, USE_TMA=True,
                              PERSISTENT=1)),
    ),
}

# Under the interpreter every program runs in Python: few tiles keep the tests fast, while
# sizes such as 33 or 48 (and 96 for a second K step) still leave partial tiles to mask.
INTERPRETER_CONFIG = GemmConfig(16, 64, 64, 4, num_warps=1, num_stages=1, SPLIT_TAIL=True,
                                USE_TMA=True, PERSISTENT=1)
COMBINE_BLOCK_SIZE_N = 1024
# Programs of a PERSISTENT launch under the interpreter: few, so that each loops over tiles.
INTERPRETER_PROGRAMS = 3
# Slots per program of the grouping kernels (each sorts its chunk of keys). On an H100 at
# 24576 slots: 9.5 us with 256, 9.8 with 512, 12.8 with 128, 13.3 with 1024.
GROUP_BLOCK_SIZE = 256
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
    """topk_ids [T, k] -> ExpertGroups: a stable counting sort by expert, in two launches.

    sorted_slots and expert_offsets are int32. kernels/group.py has the algorithm.
    """
    flat = topk_ids.reshape(-1)
    num_slots = flat.numel()
    sorted_slots = flat.new_empty(num_slots, dtype=torch.int32)
    if num_slots == 0:
        return ExpertGroups(sorted_slots, flat.new_zeros(num_experts + 1, dtype=torch.int32))
    offsets = flat.new_empty(num_experts + 1, dtype=torch.int32)  # the scatter writes all

    block = min(max(triton.next_power_of_2(num_slots), 16), GROUP_BLOCK_SIZE)
    experts_pow2 = max(triton.next_power_of_2(num_experts), 16)
    num_chunks = triton.cdiv(num_slots, block)
    counts = flat.new_empty((num_chunks, experts_pow2), dtype=torch.int32)
    moe_count_kernel[(num_chunks,)](
        flat, counts, num_slots, BLOCK_SIZE=block, EXPERTS_POW2=experts_pow2,
    )
    moe_scatter_kernel[(num_chunks,)](
        flat, counts, sorted_slots, offsets,
        num_slots, num_experts, num_chunks,
        BLOCK_SIZE=block, EXPERTS_POW2=experts_pow2,
        CHUNKS_PER_STEP=min(triton.next_power_of_2(num_chunks), 32),
    )
    return ExpertGroups(sorted_slots, offsets)


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
    grid = _grid(config, num_slots, num_experts, inter, hidden_states.device)
    gate_step, up_offset = (2, 1) if activation.interleaved else (1, inter)
    bias = w13_bias if w13_bias is not None else w13  # never read without HAS_BIAS
    w13_desc = None
    if config.USE_TMA and not activation.interleaved and w13.is_contiguous():
        # [E * planes, I, H]: a gated expert's gate rows, then its up rows.
        planes = 2 if activation.gated else 1
        w13_desc = _descriptor(w13.view(-1, inter, w13.shape[2]),
                               [planes, config.BLOCK_SIZE_N, config.BLOCK_SIZE_K])
    moe_gate_up_kernel[grid](
        hidden_states, w13, w13_desc, bias, _flat_weights(topk_weights),
        groups.sorted_slots, groups.expert_offsets, h,
        inter, hidden_states.shape[1], num_experts, top_k,
        gate_step, up_offset,
        hidden_states.stride(0), hidden_states.stride(1),
        w13.stride(0), w13.stride(1), w13.stride(2),
        bias.stride(0), bias.stride(1),
        h.stride(0), h.stride(1),
        EXPERTS_POW2=triton.next_power_of_2(num_experts),
        EVEN_K=hidden_states.shape[1] % config.BLOCK_SIZE_K == 0,
        USE_TMA=w13_desc is not None,
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
    grid = _grid(config, num_slots, num_experts, hidden, h.device)
    bias = w2_bias if w2_bias is not None else w2  # never read without HAS_BIAS
    descriptors = (None, None, None)
    if config.USE_TMA and w2.is_contiguous():
        block_m, block_k = config.BLOCK_SIZE_M, config.BLOCK_SIZE_K
        tail_m = block_m // 2 if config.SPLIT_TAIL else block_m
        found = (_descriptor(h, [block_m, block_k]), _descriptor(h, [tail_m, block_k]),
                 _descriptor(w2.view(-1, inter), [config.BLOCK_SIZE_N, block_k]))
        descriptors = found if None not in found else descriptors
    h_desc, h_tail_desc, w2_desc = descriptors
    moe_down_kernel[grid](
        h, h_desc, h_tail_desc, w2, w2_desc, bias, _flat_weights(topk_weights),
        groups.sorted_slots, groups.expert_offsets, y,
        hidden, inter, num_experts,
        h.stride(0), h.stride(1),
        w2.stride(0), w2.stride(1), w2.stride(2),
        bias.stride(0), bias.stride(1),
        y.stride(0), y.stride(1),
        EXPERTS_POW2=triton.next_power_of_2(num_experts),
        EVEN_K=inter % config.BLOCK_SIZE_K == 0,
        USE_TMA=h_desc is not None,
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


def _grid(config: GemmConfig, num_slots: int, num_experts: int, width: int,
          device: torch.device) -> tuple[int]:
    """Programs for a grouped GEMM of output width ``width``: one per tile that there can be
    (programs past the last tile do nothing), or at most PERSISTENT per SM."""
    # Each non-empty expert wastes less than one tile: sum cdiv(n_e, M) <= cdiv(S, M) + min(E, S).
    row_tiles = triton.cdiv(num_slots, config.BLOCK_SIZE_M) + min(num_experts, num_slots)
    tiles = row_tiles * triton.cdiv(width, config.BLOCK_SIZE_N)
    if config.PERSISTENT:
        return (min(tiles, config.PERSISTENT * _num_sms(device)),)
    return (tiles,)


@functools.cache
def _num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return INTERPRETER_PROGRAMS
    return torch.cuda.get_device_properties(device).multi_processor_count


def _descriptor(t: torch.Tensor, block_shape: list[int]) -> TensorDescriptor | None:
    """A tensor descriptor of t in tiles of block_shape, or None where the copy engine cannot
    read t: its last dimension contiguous, its base and other strides multiples of 16 bytes.
    On the GPU only 16-bit types take this path (the one the tests check, in bf16)."""
    if t.numel() == 0 or t.stride(-1) != 1 or t.data_ptr() % 16:
        return None
    if any(stride * t.element_size() % 16 for stride in t.stride()[:-1]):
        return None
    if t.is_cuda and t.element_size() != 2:
        return None
    return TensorDescriptor(t, list(t.shape), list(t.stride()), block_shape)


def _flat_weights(topk_weights: torch.Tensor) -> torch.Tensor:
    return topk_weights.reshape(-1).to(torch.float32)


def _dot_precision(dtype: torch.dtype) -> str:
    # fp32 inputs: full-precision products, not TF32; 16-bit inputs ignore the setting.
    return "ieee" if dtype == torch.float32 else "tf32"
