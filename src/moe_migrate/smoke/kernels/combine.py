"""Sum each token's top-k expert outputs (already weighted by the down kernel)."""

import triton
import triton.language as tl


@triton.jit
def moe_combine_kernel(
    # Pointers to tensors
    y_ptr, out_ptr,
    # Dimensions
    N, top_k,
    # Strides
    stride_ym, stride_yn,
    stride_om, stride_on,
    # Meta-parameters
    BLOCK_SIZE_N: tl.constexpr,
):
    """out[t, :] = sum over j < top_k of y[t * top_k + j, :], accumulated in fp32.

    y    [T * top_k, N]   expert outputs in slot order
    out  [T, N]
    """
    # -----------------------------------------------------------
    # One token, one column tile per program.
    token = tl.program_id(axis=0).to(tl.int64)
    offs_n = tl.program_id(axis=1) * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)
    col_mask = offs_n < N

    # -----------------------------------------------------------
    # Sum the token's slots. Each row of y is read once, so its lines are marked to leave
    # the L2 first (24576 x 2048 on an H100, L2 cold before: 36.7 us against 40.2).
    acc = tl.zeros((BLOCK_SIZE_N,), dtype=tl.float32)
    y_ptrs = y_ptr + token * top_k * stride_ym + offs_n * stride_yn
    for _ in range(0, top_k):
        acc += tl.load(y_ptrs, mask=col_mask, other=0.0,
                       eviction_policy="evict_first").to(tl.float32)
        y_ptrs += stride_ym

    # -----------------------------------------------------------
    # Write back.
    out_ptrs = out_ptr + token * stride_om + offs_n * stride_on
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=col_mask)
