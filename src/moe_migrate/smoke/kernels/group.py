"""Group the routed slots by expert: a stable counting sort in two launches.

The S = T * top_k slots are cut into chunks of BLOCK_SIZE slots.

1. moe_count_kernel: each chunk counts its slots per expert.
2. moe_scatter_kernel: each chunk adds up the counts of all chunks (the experts' offsets)
   and of the chunks before it (where its own slots of each expert start), ranks its slots
   within their expert by a sort of (expert, slot) keys, and writes each slot to its place.
   Chunk 0 also writes the offsets.

Slots of one expert keep their order (chunks in order, slots within a chunk by index), so the
result equals a stable sort by expert id, without the several passes of a radix sort.
"""

import triton
import triton.language as tl


@triton.jit
def moe_count_kernel(
    # Pointers to tensors
    ids_ptr, counts_ptr,
    # Dimensions
    num_slots,
    # Meta-parameters
    BLOCK_SIZE: tl.constexpr, EXPERTS_POW2: tl.constexpr,
):
    """counts[c, e] = how many of slots c * BLOCK_SIZE onwards (BLOCK_SIZE of them) go to e.

    ids     [S]                             expert id per slot (topk_ids flattened)
    counts  [num_chunks, EXPERTS_POW2] int32
    """
    chunk = tl.program_id(axis=0)
    offs = chunk * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    valid = offs < num_slots
    ids = tl.load(ids_ptr + offs, mask=valid, other=0).to(tl.int32)
    hist = tl.histogram(ids, EXPERTS_POW2, mask=valid)
    tl.store(counts_ptr + chunk * EXPERTS_POW2 + tl.arange(0, EXPERTS_POW2), hist)


@triton.jit
def moe_scatter_kernel(
    # Pointers to tensors
    ids_ptr, counts_ptr, sorted_slots_ptr, expert_offsets_ptr,
    # Dimensions
    num_slots, num_experts, num_chunks,
    # Meta-parameters
    BLOCK_SIZE: tl.constexpr, EXPERTS_POW2: tl.constexpr, CHUNKS_PER_STEP: tl.constexpr,
):
    """Write each slot of chunk program_id(0) to its grouped row; chunk 0 writes the offsets.

    ids             [S]                                 expert id per slot
    counts          [num_chunks, EXPERTS_POW2] int32    from moe_count_kernel
    sorted_slots    [S] int32                           slot of each grouped row
    expert_offsets  [num_experts + 1] int32             expert e owns rows offsets[e]:offsets[e + 1]
    """
    chunk = tl.program_id(axis=0)
    experts = tl.arange(0, EXPERTS_POW2)

    # -----------------------------------------------------------
    # Per expert: all slots (totals) and the slots of the chunks before this one (before).
    totals = tl.zeros((EXPERTS_POW2,), dtype=tl.int32)
    before = tl.zeros((EXPERTS_POW2,), dtype=tl.int32)
    for first in range(0, num_chunks, CHUNKS_PER_STEP):
        chunks = first + tl.arange(0, CHUNKS_PER_STEP)
        counts = tl.load(counts_ptr + chunks[:, None] * EXPERTS_POW2 + experts[None, :],
                         mask=(chunks < num_chunks)[:, None], other=0)
        totals += tl.sum(counts, axis=0)
        before += tl.sum(tl.where((chunks < chunk)[:, None], counts, 0), axis=0)
    offsets = tl.cumsum(totals, 0) - totals
    if chunk == 0:
        tl.store(expert_offsets_ptr + experts, offsets, mask=experts < num_experts)
        tl.store(expert_offsets_ptr + num_experts, num_slots)

    # -----------------------------------------------------------
    # Rank this chunk's slots within their expert: sort the keys expert * BLOCK_SIZE + index
    # (padding sorts last, as expert EXPERTS_POW2); position p of the sorted keys holds the
    # (p - chunk_start[e])-th slot of expert e in this chunk.
    local = tl.arange(0, BLOCK_SIZE)
    offs = chunk * BLOCK_SIZE + local
    valid = offs < num_slots
    ids = tl.load(ids_ptr + offs, mask=valid, other=EXPERTS_POW2).to(tl.int32)
    hist = tl.histogram(ids, EXPERTS_POW2, mask=valid)
    chunk_start = tl.cumsum(hist, 0) - hist
    keys = tl.sort(ids * BLOCK_SIZE + local)
    expert = keys // BLOCK_SIZE
    written = expert < EXPERTS_POW2
    expert = tl.minimum(expert, EXPERTS_POW2 - 1)
    rows = tl.gather(offsets + before - chunk_start, expert, 0) + local

    # -----------------------------------------------------------
    # Write back the slots, in grouped row order.
    slots = chunk * BLOCK_SIZE + keys % BLOCK_SIZE
    tl.store(sorted_slots_ptr + rows, slots, mask=written)
