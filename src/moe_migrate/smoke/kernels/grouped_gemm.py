"""Grouped GEMMs over the routed slots, one expert per tile of rows.

The slots are grouped by expert (launch.group_tokens): expert e owns rows
``expert_offsets[e] : expert_offsets[e + 1]`` of the grouped order, and ``sorted_slots[r]``
names the slot (token * top_k + j) of row r. Each expert's rows are cut into tiles of
BLOCK_SIZE_M rows; a tile never spans two experts, and the last tile of an expert is masked.
With SPLIT_TAIL, a last tile of at most BLOCK_SIZE_M / 2 rows runs at that half height
(fewer padding rows multiplied); EVEN_K drops the K masks when K divides by BLOCK_SIZE_K.
The launcher cannot know how many tiles there will be without a device sync, so it launches
an upper bound, ``cdiv(S, BLOCK_SIZE_M) + min(E, S)``, and programs past the last tile return
at once. No row index is ever padded with -1: masked rows read row 0 and write nothing.

Pseudo-code of one program of the gate/up kernel::

    e, rows = tile(pid_m)                       # an expert and up to BLOCK_SIZE_M rows
    x = hidden_states[sorted_slots[rows] // top_k]
    h[rows, cols] = act(x @ w13[e, gate_cols].T) * (x @ w13[e, up_cols].T)
"""

import triton
import triton.language as tl

from .activation import activate, activate_and_mul


@triton.jit
def _tile_of(pid, num_pid_m, num_pid_n, GROUP_SIZE_M: tl.constexpr):
    """Map a program id to (pid_m, pid_n), GROUP_SIZE_M row tiles at a time (tutorial 03)."""
    num_pid_in_group = GROUP_SIZE_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_SIZE_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_SIZE_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m
    return pid_m, pid_n


@triton.jit
def _rows_of(expert_offsets_ptr, pid_m, num_experts, BLOCK_SIZE_M: tl.constexpr,
             EXPERTS_POW2: tl.constexpr):
    """Find row tile pid_m: (expert, first row, end row); expert == num_experts past the end.

    Every expert with n rows has cdiv(n, BLOCK_SIZE_M) tiles; the tiles are numbered expert
    by expert, so tile pid_m belongs to the number of experts whose tiles all come before it.
    """
    e = tl.arange(0, EXPERTS_POW2)
    starts = tl.load(expert_offsets_ptr + e, mask=e < num_experts, other=0)
    ends = tl.load(expert_offsets_ptr + e + 1, mask=e < num_experts, other=0)
    tiles = (ends - starts + BLOCK_SIZE_M - 1) // BLOCK_SIZE_M
    tiles_end = tl.cumsum(tiles, 0)
    expert = tl.sum((tiles_end <= pid_m).to(tl.int32), 0)
    mine = e == expert
    first_tile = tl.sum(tl.where(mine, tiles_end - tiles, 0), 0)
    row_start = tl.sum(tl.where(mine, starts, 0), 0) + (pid_m - first_tile) * BLOCK_SIZE_M
    row_end = tl.sum(tl.where(mine, ends, 0), 0)
    return expert, row_start, row_end


@triton.jit
def moe_gate_up_kernel(
    # Pointers to tensors
    x_ptr, w13_ptr, b13_ptr, topk_weights_ptr, sorted_slots_ptr, expert_offsets_ptr, h_ptr,
    # Dimensions: N is the output width I, K the hidden size H
    N, K, num_experts, top_k, num_pid_m,
    # Where the gate and up rows of output column n sit in w13: gate row n * gate_step,
    # up row n * gate_step + up_offset ((1, I) for two halves, (2, 1) for interleaved)
    gate_step, up_offset,
    # Strides: how many elements to skip to move one step along each dimension
    stride_xm, stride_xk,
    stride_we, stride_wn, stride_wk,
    stride_be, stride_bn,
    stride_hm, stride_hn,
    # Meta-parameters
    BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_N: tl.constexpr, BLOCK_SIZE_K: tl.constexpr,
    GROUP_SIZE_M: tl.constexpr, EXPERTS_POW2: tl.constexpr,
    SPLIT_TAIL: tl.constexpr, EVEN_K: tl.constexpr,
    IS_GATED: tl.constexpr, ACTIVATION: tl.constexpr, HAS_BIAS: tl.constexpr,
    WEIGHT_ON_INPUT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """Grouped gate/up projection with the activation (and multiply) in the epilogue.

    x               [T, K]          hidden states
    w13             [E, 2N, K]      gate and up projections (IS_GATED), else [E, N, K]
    b13             [E, 2N] | [E, N] bias (read only when HAS_BIAS)
    topk_weights    [S] float32     routing weight per slot (read only when WEIGHT_ON_INPUT)
    sorted_slots    [S]             slots grouped by expert
    expert_offsets  [E + 1] int32   expert e owns grouped rows offsets[e]:offsets[e + 1]
    h               [S, N]          output, in grouped row order
    """
    # -----------------------------------------------------------
    # Map the program id to a row tile of one expert and a column tile.
    num_pid_n = tl.cdiv(N, BLOCK_SIZE_N)
    pid_m, pid_n = _tile_of(tl.program_id(axis=0), num_pid_m, num_pid_n, GROUP_SIZE_M)
    expert, row_start, row_end = _rows_of(expert_offsets_ptr, pid_m, num_experts,
                                          BLOCK_SIZE_M, EXPERTS_POW2)
    if expert >= num_experts:
        return

    # -----------------------------------------------------------
    # A tail of at most half a tile runs on half-height tiles: less padding to multiply.
    if SPLIT_TAIL:
        if row_end - row_start <= BLOCK_SIZE_M // 2:
            _gate_up_tile(
                x_ptr, w13_ptr, b13_ptr, topk_weights_ptr, sorted_slots_ptr, h_ptr,
                expert, row_start, row_end, pid_n, N, K, top_k, gate_step, up_offset,
                stride_xm, stride_xk, stride_we, stride_wn, stride_wk, stride_be, stride_bn,
                stride_hm, stride_hn,
                BLOCK_SIZE_M // 2, BLOCK_SIZE_N, BLOCK_SIZE_K, EVEN_K,
                IS_GATED, ACTIVATION, HAS_BIAS, WEIGHT_ON_INPUT, DOT_PRECISION,
            )
            return
    _gate_up_tile(
        x_ptr, w13_ptr, b13_ptr, topk_weights_ptr, sorted_slots_ptr, h_ptr,
        expert, row_start, row_end, pid_n, N, K, top_k, gate_step, up_offset,
        stride_xm, stride_xk, stride_we, stride_wn, stride_wk, stride_be, stride_bn,
        stride_hm, stride_hn,
        BLOCK_SIZE_M, BLOCK_SIZE_N, BLOCK_SIZE_K, EVEN_K,
        IS_GATED, ACTIVATION, HAS_BIAS, WEIGHT_ON_INPUT, DOT_PRECISION,
    )


@triton.jit
def _gate_up_tile(
    x_ptr, w13_ptr, b13_ptr, topk_weights_ptr, sorted_slots_ptr, h_ptr,
    expert, row_start, row_end, pid_n, N, K, top_k, gate_step, up_offset,
    stride_xm, stride_xk, stride_we, stride_wn, stride_wk, stride_be, stride_bn,
    stride_hm, stride_hn,
    BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_N: tl.constexpr, BLOCK_SIZE_K: tl.constexpr,
    EVEN_K: tl.constexpr, IS_GATED: tl.constexpr, ACTIVATION: tl.constexpr,
    HAS_BIAS: tl.constexpr, WEIGHT_ON_INPUT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """One tile of moe_gate_up_kernel: rows row_start:row_end (at most BLOCK_SIZE_M) of
    expert, columns pid_n * BLOCK_SIZE_N onwards; arguments as in moe_gate_up_kernel."""
    # -----------------------------------------------------------
    # Pointer blocks: the tile's token rows of x and the gate/up rows of w13[expert].
    offs_m = row_start + tl.arange(0, BLOCK_SIZE_M)
    row_mask = offs_m < row_end
    slots = tl.load(sorted_slots_ptr + offs_m, mask=row_mask, other=0)
    tokens = (slots // top_k).to(tl.int64)
    offs_n = pid_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)
    col_mask = offs_n < N
    offs_k = tl.arange(0, BLOCK_SIZE_K)
    gate_rows = offs_n * gate_step
    w_expert = w13_ptr + expert.to(tl.int64) * stride_we
    x_ptrs = x_ptr + tokens[:, None] * stride_xm + offs_k[None, :] * stride_xk
    gate_ptrs = w_expert + gate_rows[None, :] * stride_wn + offs_k[:, None] * stride_wk
    up_ptrs = gate_ptrs + up_offset * stride_wn

    # -----------------------------------------------------------
    # K loop: fp32 accumulators for the gate (and up) columns.
    acc_gate = tl.zeros((BLOCK_SIZE_M, BLOCK_SIZE_N), dtype=tl.float32)
    acc_up = tl.zeros((BLOCK_SIZE_M, BLOCK_SIZE_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_SIZE_K)):
        if EVEN_K:
            a = tl.load(x_ptrs, mask=row_mask[:, None], other=0.0)
            b = tl.load(gate_ptrs, mask=col_mask[None, :], other=0.0)
        else:
            k_mask = offs_k < K - k * BLOCK_SIZE_K
            a = tl.load(x_ptrs, mask=row_mask[:, None] & k_mask[None, :], other=0.0)
            b = tl.load(gate_ptrs, mask=k_mask[:, None] & col_mask[None, :], other=0.0)
        acc_gate = tl.dot(a, b, acc_gate, input_precision=DOT_PRECISION)
        if IS_GATED:
            if EVEN_K:
                b = tl.load(up_ptrs, mask=col_mask[None, :], other=0.0)
            else:
                b = tl.load(up_ptrs, mask=k_mask[:, None] & col_mask[None, :], other=0.0)
            acc_up = tl.dot(a, b, acc_up, input_precision=DOT_PRECISION)
        x_ptrs += BLOCK_SIZE_K * stride_xk
        gate_ptrs += BLOCK_SIZE_K * stride_wk
        up_ptrs += BLOCK_SIZE_K * stride_wk

    # -----------------------------------------------------------
    # Epilogue: routing weight (when it scales the input), bias, activation.
    if WEIGHT_ON_INPUT:
        w = tl.load(topk_weights_ptr + slots, mask=row_mask, other=0.0)
        acc_gate = acc_gate * w[:, None]
        acc_up = acc_up * w[:, None]
    if HAS_BIAS:
        b_expert = b13_ptr + expert.to(tl.int64) * stride_be
        acc_gate += tl.load(b_expert + gate_rows * stride_bn, mask=col_mask, other=0.0)[None, :]
        if IS_GATED:
            up_bias = tl.load(b_expert + (gate_rows + up_offset) * stride_bn, mask=col_mask,
                              other=0.0)
            acc_up += up_bias[None, :]
    if IS_GATED:
        out = activate_and_mul(acc_gate, acc_up, ACTIVATION)
    else:
        out = activate(acc_gate, ACTIVATION)

    # -----------------------------------------------------------
    # Write back the tile of h, in grouped row order.
    h_ptrs = h_ptr + offs_m.to(tl.int64)[:, None] * stride_hm + offs_n[None, :] * stride_hn
    tl.store(h_ptrs, out.to(h_ptr.dtype.element_ty), mask=row_mask[:, None] & col_mask[None, :])


@triton.jit
def moe_down_kernel(
    # Pointers to tensors
    h_ptr, w2_ptr, b2_ptr, topk_weights_ptr, sorted_slots_ptr, expert_offsets_ptr, y_ptr,
    # Dimensions: N is the output width H, K the intermediate size I
    N, K, num_experts, num_pid_m,
    # Strides: how many elements to skip to move one step along each dimension
    stride_hm, stride_hk,
    stride_we, stride_wn, stride_wk,
    stride_be, stride_bn,
    stride_ym, stride_yn,
    # Meta-parameters
    BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_N: tl.constexpr, BLOCK_SIZE_K: tl.constexpr,
    GROUP_SIZE_M: tl.constexpr, EXPERTS_POW2: tl.constexpr,
    SPLIT_TAIL: tl.constexpr, EVEN_K: tl.constexpr,
    HAS_BIAS: tl.constexpr, MUL_ROUTED_WEIGHT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """Grouped down projection with the routing weight in the epilogue, scattered to slots.

    h               [S, K]          gate/up output, in grouped row order
    w2              [E, N, K]       down projections
    b2              [E, N]          bias (read only when HAS_BIAS)
    topk_weights    [S] float32     routing weight per slot (read only when MUL_ROUTED_WEIGHT)
    sorted_slots    [S]             slots grouped by expert
    expert_offsets  [E + 1] int32   expert e owns grouped rows offsets[e]:offsets[e + 1]
    y               [S, N]          output, row sorted_slots[r] for grouped row r
    """
    # -----------------------------------------------------------
    # Map the program id to a row tile of one expert and a column tile.
    num_pid_n = tl.cdiv(N, BLOCK_SIZE_N)
    pid_m, pid_n = _tile_of(tl.program_id(axis=0), num_pid_m, num_pid_n, GROUP_SIZE_M)
    expert, row_start, row_end = _rows_of(expert_offsets_ptr, pid_m, num_experts,
                                          BLOCK_SIZE_M, EXPERTS_POW2)
    if expert >= num_experts:
        return

    # -----------------------------------------------------------
    # A tail of at most half a tile runs on half-height tiles: less padding to multiply.
    if SPLIT_TAIL:
        if row_end - row_start <= BLOCK_SIZE_M // 2:
            _down_tile(
                h_ptr, w2_ptr, b2_ptr, topk_weights_ptr, sorted_slots_ptr, y_ptr,
                expert, row_start, row_end, pid_n, N, K,
                stride_hm, stride_hk, stride_we, stride_wn, stride_wk, stride_be, stride_bn,
                stride_ym, stride_yn,
                BLOCK_SIZE_M // 2, BLOCK_SIZE_N, BLOCK_SIZE_K, EVEN_K,
                HAS_BIAS, MUL_ROUTED_WEIGHT, DOT_PRECISION,
            )
            return
    _down_tile(
        h_ptr, w2_ptr, b2_ptr, topk_weights_ptr, sorted_slots_ptr, y_ptr,
        expert, row_start, row_end, pid_n, N, K,
        stride_hm, stride_hk, stride_we, stride_wn, stride_wk, stride_be, stride_bn,
        stride_ym, stride_yn,
        BLOCK_SIZE_M, BLOCK_SIZE_N, BLOCK_SIZE_K, EVEN_K,
        HAS_BIAS, MUL_ROUTED_WEIGHT, DOT_PRECISION,
    )


@triton.jit
def _down_tile(
    h_ptr, w2_ptr, b2_ptr, topk_weights_ptr, sorted_slots_ptr, y_ptr,
    expert, row_start, row_end, pid_n, N, K,
    stride_hm, stride_hk, stride_we, stride_wn, stride_wk, stride_be, stride_bn,
    stride_ym, stride_yn,
    BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_N: tl.constexpr, BLOCK_SIZE_K: tl.constexpr,
    EVEN_K: tl.constexpr, HAS_BIAS: tl.constexpr, MUL_ROUTED_WEIGHT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """One tile of moe_down_kernel: rows row_start:row_end (at most BLOCK_SIZE_M) of expert,
    columns pid_n * BLOCK_SIZE_N onwards; arguments as in moe_down_kernel."""
    # -----------------------------------------------------------
    # Pointer blocks: the tile's rows of h (contiguous) and the rows of w2[expert].
    offs_m = row_start + tl.arange(0, BLOCK_SIZE_M)
    row_mask = offs_m < row_end
    offs_n = pid_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)
    col_mask = offs_n < N
    offs_k = tl.arange(0, BLOCK_SIZE_K)
    h_ptrs = h_ptr + offs_m.to(tl.int64)[:, None] * stride_hm + offs_k[None, :] * stride_hk
    w_ptrs = (w2_ptr + expert.to(tl.int64) * stride_we
              + offs_n[None, :] * stride_wn + offs_k[:, None] * stride_wk)

    # -----------------------------------------------------------
    # K loop with an fp32 accumulator.
    acc = tl.zeros((BLOCK_SIZE_M, BLOCK_SIZE_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_SIZE_K)):
        if EVEN_K:
            a = tl.load(h_ptrs, mask=row_mask[:, None], other=0.0)
            b = tl.load(w_ptrs, mask=col_mask[None, :], other=0.0)
        else:
            k_mask = offs_k < K - k * BLOCK_SIZE_K
            a = tl.load(h_ptrs, mask=row_mask[:, None] & k_mask[None, :], other=0.0)
            b = tl.load(w_ptrs, mask=k_mask[:, None] & col_mask[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
        h_ptrs += BLOCK_SIZE_K * stride_hk
        w_ptrs += BLOCK_SIZE_K * stride_wk

    # -----------------------------------------------------------
    # Epilogue: bias, then the routing weight (vLLM's order), in fp32.
    slots = tl.load(sorted_slots_ptr + offs_m, mask=row_mask, other=0)
    if HAS_BIAS:
        b_ptrs = b2_ptr + expert.to(tl.int64) * stride_be + offs_n * stride_bn
        acc += tl.load(b_ptrs, mask=col_mask, other=0.0)[None, :]
    if MUL_ROUTED_WEIGHT:
        w = tl.load(topk_weights_ptr + slots, mask=row_mask, other=0.0)
        acc = acc * w[:, None]

    # -----------------------------------------------------------
    # Scatter the tile back to slot order.
    y_ptrs = y_ptr + slots.to(tl.int64)[:, None] * stride_ym + offs_n[None, :] * stride_yn
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=row_mask[:, None] & col_mask[None, :])
