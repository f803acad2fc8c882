"""Grouped GEMMs over the routed slots, one expert per tile of rows.

The slots are grouped by expert (launch.group_tokens): expert e owns rows
``expert_offsets[e] : expert_offsets[e + 1]`` of the grouped order, and ``sorted_slots[r]``
names the slot (token * top_k + j) of row r. Each expert's rows are cut into tiles of
BLOCK_SIZE_M rows; a tile never spans two experts, and the last tile of an expert is masked.
EVEN_K drops the K masks when K divides by BLOCK_SIZE_K. No row index is ever padded with
-1: masked rows read row 0 and write nothing.

Tiles are numbered expert by expert, column tiles GROUP_SIZE_M row tiles at a time. With
SPLIT_TAIL an expert's last tile of at most BLOCK_SIZE_M / 2 rows runs at that half height:
fewer padding rows multiplied. (Running all such tails after all full tiles, so that each
loop has one tile shape, reads the tails' weights a second time: 15% slower on an H100.)

Program p runs tiles p, p + P, p + 2P, ... (P programs). The launcher cannot know how many
tiles there are without a device sync: it launches either an upper bound,
``cdiv(S, BLOCK_SIZE_M) + min(E, S)`` row tiles' worth (one tile per program; programs past
the last tile do nothing), or, PERSISTENT, one program per SM. Without SPLIT_TAIL the
compiler flattens a PERSISTENT program's K loops into one software pipeline, so that the next
tile's loads overlap this tile's epilogue.

With USE_TMA the weight tiles (and, in the down GEMM, the tiles of h, whose rows are already
grouped) are read through tensor descriptors (Hopper's bulk tensor copies): w13 as
[E * planes, N, K] (a gated expert's gate rows, then its up rows), w2 as [E * N, K], h as
[S, K]. The copy engine fills what lies past the tensor with zeros; a tile of w2 or h may run
past its expert's rows, which only reaches output columns or rows that are never written.

Pseudo-code of one tile of the gate/up kernel::

    e, rows = tile(pid_m)                       # an expert and up to BLOCK_SIZE_M rows
    x = hidden_states[sorted_slots[rows] // top_k]
    h[rows, cols] = act(x @ w13[e, gate_cols].T) * (x @ w13[e, up_cols].T)
"""

import triton
import triton.language as tl

from .activation import activate, activate_and_mul


@triton.jit
def _tile_of(pid, num_pid_m, num_pid_n, GROUP_SIZE_M: tl.constexpr):
    """Map a tile number to (pid_m, pid_n), GROUP_SIZE_M row tiles at a time (tutorial 03)."""
    num_pid_in_group = GROUP_SIZE_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_SIZE_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_SIZE_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m
    return pid_m, pid_n


@triton.jit
def _row_tiles(expert_offsets_ptr, num_experts, BLOCK_SIZE_M: tl.constexpr,
               EXPERTS_POW2: tl.constexpr):
    """The row tiles, as vectors over the experts: first row, end row, and the end of each
    expert's tiles in the numbering (the last one is the number of row tiles)."""
    e = tl.arange(0, EXPERTS_POW2)
    starts = tl.load(expert_offsets_ptr + e, mask=e < num_experts, other=0)
    ends = tl.load(expert_offsets_ptr + e + 1, mask=e < num_experts, other=0)
    tiles = (ends - starts + BLOCK_SIZE_M - 1) // BLOCK_SIZE_M
    return starts, ends, tl.cumsum(tiles, 0)


@triton.jit
def _rows_of(starts, ends, tiles_end, pid_m, BLOCK_SIZE_M: tl.constexpr,
             EXPERTS_POW2: tl.constexpr):
    """Row tile pid_m of the _row_tiles numbering: (expert, first row, end row).

    Tile pid_m belongs to the number of experts whose tiles all come before it.
    """
    e = tl.arange(0, EXPERTS_POW2)
    expert = tl.sum((tiles_end <= pid_m).to(tl.int32), 0)
    mine = e == expert
    first_tile = tl.max(tl.where(e < expert, tiles_end, 0), 0)
    row_start = tl.sum(tl.where(mine, starts, 0), 0) + (pid_m - first_tile) * BLOCK_SIZE_M
    row_end = tl.sum(tl.where(mine, ends, 0), 0)
    return expert, row_start, row_end


# --------------------------------------------------------------------------------------
# Gate/up
# --------------------------------------------------------------------------------------


@triton.jit
def moe_gate_up_kernel(
    # Pointers to tensors (w13_desc: a descriptor of w13 as [E * planes, N, K], or None)
    x_ptr, w13_ptr, w13_desc, b13_ptr, topk_weights_ptr, sorted_slots_ptr, expert_offsets_ptr,
    h_ptr,
    # Dimensions: N is the output width I, K the hidden size H
    N, K, num_experts, top_k,
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
    SPLIT_TAIL: tl.constexpr, EVEN_K: tl.constexpr, USE_TMA: tl.constexpr,
    PERSISTENT: tl.constexpr,
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

    USE_TMA needs gate and up as the two halves of w13 (gate_step 1).
    """
    num_pid_n = tl.cdiv(N, BLOCK_SIZE_N)
    starts, ends, tiles_end = _row_tiles(expert_offsets_ptr, num_experts, BLOCK_SIZE_M,
                                         EXPERTS_POW2)
    num_pid_m = tl.max(tiles_end, 0)
    for tile in tl.range(tl.program_id(axis=0), num_pid_m * num_pid_n, tl.num_programs(axis=0),
                         flatten=PERSISTENT):
        pid_m, pid_n = _tile_of(tile, num_pid_m, num_pid_n, GROUP_SIZE_M)
        expert, row_start, row_end = _rows_of(starts, ends, tiles_end, pid_m, BLOCK_SIZE_M,
                                              EXPERTS_POW2)
        # A tail of at most half a tile runs on half-height tiles: less padding to multiply.
        if SPLIT_TAIL and row_end - row_start <= BLOCK_SIZE_M // 2:
            _gate_up_tile(
                x_ptr, w13_ptr, w13_desc, b13_ptr, topk_weights_ptr, sorted_slots_ptr, h_ptr,
                expert, row_start, row_end, pid_n, N, K, top_k, gate_step, up_offset,
                stride_xm, stride_xk, stride_we, stride_wn, stride_wk, stride_be, stride_bn,
                stride_hm, stride_hn,
                BLOCK_SIZE_M // 2, BLOCK_SIZE_N, BLOCK_SIZE_K, EVEN_K, USE_TMA,
                IS_GATED, ACTIVATION, HAS_BIAS, WEIGHT_ON_INPUT, DOT_PRECISION,
            )
        else:
            _gate_up_tile(
                x_ptr, w13_ptr, w13_desc, b13_ptr, topk_weights_ptr, sorted_slots_ptr, h_ptr,
                expert, row_start, row_end, pid_n, N, K, top_k, gate_step, up_offset,
                stride_xm, stride_xk, stride_we, stride_wn, stride_wk, stride_be, stride_bn,
                stride_hm, stride_hn,
                BLOCK_SIZE_M, BLOCK_SIZE_N, BLOCK_SIZE_K, EVEN_K, USE_TMA,
                IS_GATED, ACTIVATION, HAS_BIAS, WEIGHT_ON_INPUT, DOT_PRECISION,
            )


@triton.jit
def _gate_up_tile(
    x_ptr, w13_ptr, w13_desc, b13_ptr, topk_weights_ptr, sorted_slots_ptr, h_ptr,
    expert, row_start, row_end, pid_n, N, K, top_k, gate_step, up_offset,
    stride_xm, stride_xk, stride_we, stride_wn, stride_wk, stride_be, stride_bn,
    stride_hm, stride_hn,
    BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_N: tl.constexpr, BLOCK_SIZE_K: tl.constexpr,
    EVEN_K: tl.constexpr, USE_TMA: tl.constexpr, IS_GATED: tl.constexpr,
    ACTIVATION: tl.constexpr, HAS_BIAS: tl.constexpr, WEIGHT_ON_INPUT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """One tile of moe_gate_up_kernel: rows row_start:row_end (at most BLOCK_SIZE_M) of
    expert, columns pid_n * BLOCK_SIZE_N onwards; arguments as in moe_gate_up_kernel."""
    # -----------------------------------------------------------
    # The tile's token rows of x; its gate (and up) rows of w13[expert].
    offs_m = row_start + tl.arange(0, BLOCK_SIZE_M)
    row_mask = offs_m < row_end
    slots = tl.load(sorted_slots_ptr + offs_m, mask=row_mask, other=0)
    tokens = (slots // top_k).to(tl.int64)
    offs_n = pid_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)
    col_mask = offs_n < N
    gate_rows = offs_n * gate_step
    x_ptrs = x_ptr + tokens[:, None] * stride_xm + tl.arange(0, BLOCK_SIZE_K)[None, :] * stride_xk

    # -----------------------------------------------------------
    # One product for the gate and up columns together (one matrix instruction of twice the
    # width, x read once), then split.
    if IS_GATED:
        acc = _gate_up_product(
            x_ptrs, row_mask, w13_ptr, w13_desc, expert, pid_n, N, K, gate_step, up_offset,
            stride_xk, stride_we, stride_wn, stride_wk,
            BLOCK_SIZE_M, BLOCK_SIZE_N, BLOCK_SIZE_K, 2, EVEN_K, USE_TMA, DOT_PRECISION,
        )
        acc = acc.reshape(BLOCK_SIZE_M, 2, BLOCK_SIZE_N).permute(0, 2, 1)
        acc_gate, acc_up = acc.split()
    else:
        acc_gate = _gate_up_product(
            x_ptrs, row_mask, w13_ptr, w13_desc, expert, pid_n, N, K, gate_step, up_offset,
            stride_xk, stride_we, stride_wn, stride_wk,
            BLOCK_SIZE_M, BLOCK_SIZE_N, BLOCK_SIZE_K, 1, EVEN_K, USE_TMA, DOT_PRECISION,
        )
        acc_up = acc_gate  # unused

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
def _gate_up_product(
    x_ptrs, row_mask, w13_ptr, w13_desc, expert, pid_n, N, K, gate_step, up_offset,
    stride_xk, stride_we, stride_wn, stride_wk,
    BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_N: tl.constexpr, BLOCK_SIZE_K: tl.constexpr,
    PLANES: tl.constexpr, EVEN_K: tl.constexpr, USE_TMA: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """[BLOCK_SIZE_M, PLANES * BLOCK_SIZE_N] fp32: x's tile times the tile's gate columns of
    w13[expert] (PLANES 1), or its gate then its up columns (PLANES 2)."""
    offs_k = tl.arange(0, BLOCK_SIZE_K)
    acc = tl.zeros((BLOCK_SIZE_M, PLANES * BLOCK_SIZE_N), dtype=tl.float32)
    if USE_TMA:
        # w13_desc sees w13 as [E * PLANES, N, K]: expert e's gate rows are plane PLANES * e,
        # its up rows the next; columns past N read as zeros.
        plane = (expert * PLANES).to(tl.int32)
        for k in range(0, tl.cdiv(K, BLOCK_SIZE_K)):
            a = _load_rows(x_ptrs, row_mask, offs_k, K - k * BLOCK_SIZE_K, EVEN_K)
            b = w13_desc.load([plane, pid_n * BLOCK_SIZE_N, k * BLOCK_SIZE_K])
            b = b.reshape(PLANES * BLOCK_SIZE_N, BLOCK_SIZE_K)
            acc = tl.dot(a, b.T, acc, input_precision=DOT_PRECISION)
            x_ptrs += BLOCK_SIZE_K * stride_xk
    else:
        # Column j of the product: output column pid_n * BLOCK_SIZE_N + j % BLOCK_SIZE_N, of
        # the gate (j < BLOCK_SIZE_N) or the up projection.
        j = tl.arange(0, PLANES * BLOCK_SIZE_N)
        cols = pid_n * BLOCK_SIZE_N + j % BLOCK_SIZE_N
        rows = cols * gate_step + (j // BLOCK_SIZE_N) * up_offset
        w_ptrs = (w13_ptr + expert.to(tl.int64) * stride_we
                  + rows[None, :] * stride_wn + offs_k[:, None] * stride_wk)
        for k in range(0, tl.cdiv(K, BLOCK_SIZE_K)):
            k_left = K - k * BLOCK_SIZE_K
            a = _load_rows(x_ptrs, row_mask, offs_k, k_left, EVEN_K)
            b = _load_cols(w_ptrs, cols < N, offs_k, k_left, EVEN_K)
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
            x_ptrs += BLOCK_SIZE_K * stride_xk
            w_ptrs += BLOCK_SIZE_K * stride_wk
    return acc


# --------------------------------------------------------------------------------------
# Down
# --------------------------------------------------------------------------------------


@triton.jit
def moe_down_kernel(
    # Pointers to tensors (descriptors, or None without USE_TMA: h_desc of h in tiles of
    # BLOCK_SIZE_M rows, h_tail_desc in tiles of the tails' height, w2_desc of w2 as
    # [E * N, K])
    h_ptr, h_desc, h_tail_desc, w2_ptr, w2_desc, b2_ptr, topk_weights_ptr, sorted_slots_ptr,
    expert_offsets_ptr, y_ptr,
    # Dimensions: N is the output width H, K the intermediate size I
    N, K, num_experts,
    # Strides: how many elements to skip to move one step along each dimension
    stride_hm, stride_hk,
    stride_we, stride_wn, stride_wk,
    stride_be, stride_bn,
    stride_ym, stride_yn,
    # Meta-parameters
    BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_N: tl.constexpr, BLOCK_SIZE_K: tl.constexpr,
    GROUP_SIZE_M: tl.constexpr, EXPERTS_POW2: tl.constexpr,
    SPLIT_TAIL: tl.constexpr, EVEN_K: tl.constexpr, USE_TMA: tl.constexpr,
    PERSISTENT: tl.constexpr,
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
    num_pid_n = tl.cdiv(N, BLOCK_SIZE_N)
    starts, ends, tiles_end = _row_tiles(expert_offsets_ptr, num_experts, BLOCK_SIZE_M,
                                         EXPERTS_POW2)
    num_pid_m = tl.max(tiles_end, 0)
    for tile in tl.range(tl.program_id(axis=0), num_pid_m * num_pid_n, tl.num_programs(axis=0),
                         flatten=PERSISTENT):
        pid_m, pid_n = _tile_of(tile, num_pid_m, num_pid_n, GROUP_SIZE_M)
        expert, row_start, row_end = _rows_of(starts, ends, tiles_end, pid_m, BLOCK_SIZE_M,
                                              EXPERTS_POW2)
        # A tail of at most half a tile runs on half-height tiles: less padding to multiply.
        if SPLIT_TAIL and row_end - row_start <= BLOCK_SIZE_M // 2:
            _down_tile(
                h_ptr, h_tail_desc, w2_ptr, w2_desc, b2_ptr, topk_weights_ptr,
                sorted_slots_ptr, y_ptr, expert, row_start, row_end, pid_n, N, K,
                stride_hm, stride_hk, stride_we, stride_wn, stride_wk, stride_be, stride_bn,
                stride_ym, stride_yn,
                BLOCK_SIZE_M // 2, BLOCK_SIZE_N, BLOCK_SIZE_K, EVEN_K, USE_TMA,
                HAS_BIAS, MUL_ROUTED_WEIGHT, DOT_PRECISION,
            )
        else:
            _down_tile(
                h_ptr, h_desc, w2_ptr, w2_desc, b2_ptr, topk_weights_ptr, sorted_slots_ptr,
                y_ptr, expert, row_start, row_end, pid_n, N, K,
                stride_hm, stride_hk, stride_we, stride_wn, stride_wk, stride_be, stride_bn,
                stride_ym, stride_yn,
                BLOCK_SIZE_M, BLOCK_SIZE_N, BLOCK_SIZE_K, EVEN_K, USE_TMA,
                HAS_BIAS, MUL_ROUTED_WEIGHT, DOT_PRECISION,
            )


@triton.jit
def _down_tile(
    h_ptr, h_desc, w2_ptr, w2_desc, b2_ptr, topk_weights_ptr, sorted_slots_ptr, y_ptr,
    expert, row_start, row_end, pid_n, N, K,
    stride_hm, stride_hk, stride_we, stride_wn, stride_wk, stride_be, stride_bn,
    stride_ym, stride_yn,
    BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_N: tl.constexpr, BLOCK_SIZE_K: tl.constexpr,
    EVEN_K: tl.constexpr, USE_TMA: tl.constexpr,
    HAS_BIAS: tl.constexpr, MUL_ROUTED_WEIGHT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """One tile of moe_down_kernel: rows row_start:row_end (at most BLOCK_SIZE_M) of expert,
    columns pid_n * BLOCK_SIZE_N onwards; arguments as in moe_down_kernel."""
    offs_m = row_start + tl.arange(0, BLOCK_SIZE_M)
    row_mask = offs_m < row_end
    offs_n = pid_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)
    col_mask = offs_n < N
    offs_k = tl.arange(0, BLOCK_SIZE_K)

    # -----------------------------------------------------------
    # K loop with an fp32 accumulator. Through descriptors, the rows of h past the expert's
    # last row belong to the next expert (or lie past h, read as zeros): multiplied, never
    # written.
    acc = tl.zeros((BLOCK_SIZE_M, BLOCK_SIZE_N), dtype=tl.float32)
    if USE_TMA:
        w_row = (expert * N + pid_n * BLOCK_SIZE_N).to(tl.int32)
        for k in range(0, tl.cdiv(K, BLOCK_SIZE_K)):
            a = h_desc.load([row_start, k * BLOCK_SIZE_K])
            b = w2_desc.load([w_row, k * BLOCK_SIZE_K])
            acc = tl.dot(a, b.T, acc, input_precision=DOT_PRECISION)
    else:
        h_ptrs = h_ptr + offs_m.to(tl.int64)[:, None] * stride_hm + offs_k[None, :] * stride_hk
        w_ptrs = (w2_ptr + expert.to(tl.int64) * stride_we
                  + offs_n[None, :] * stride_wn + offs_k[:, None] * stride_wk)
        for k in range(0, tl.cdiv(K, BLOCK_SIZE_K)):
            k_left = K - k * BLOCK_SIZE_K
            a = _load_rows(h_ptrs, row_mask, offs_k, k_left, EVEN_K)
            b = _load_cols(w_ptrs, col_mask, offs_k, k_left, EVEN_K)
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


# --------------------------------------------------------------------------------------
# Loads
# --------------------------------------------------------------------------------------


@triton.jit
def _load_rows(ptrs, row_mask, offs_k, k_left, EVEN_K: tl.constexpr):
    """A [rows, BLOCK_SIZE_K] operand tile; masked rows and columns past K read zero."""
    if EVEN_K:
        tile = tl.load(ptrs, mask=row_mask[:, None], other=0.0)
    else:
        tile = tl.load(ptrs, mask=row_mask[:, None] & (offs_k < k_left)[None, :], other=0.0)
    return tile


@triton.jit
def _load_cols(ptrs, col_mask, offs_k, k_left, EVEN_K: tl.constexpr):
    """A [BLOCK_SIZE_K, cols] operand tile; masked columns and rows past K read zero."""
    if EVEN_K:
        tile = tl.load(ptrs, mask=col_mask[None, :], other=0.0)
    else:
        tile = tl.load(ptrs, mask=(offs_k < k_left)[:, None] & col_mask[None, :], other=0.0)
    return tile
