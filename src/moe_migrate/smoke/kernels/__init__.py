"""@triton.jit kernels of the fused MoE forward pass; launch.py launches them.

- group.moe_count_kernel           slots per expert, per chunk of slots
- group.moe_scatter_kernel         slots grouped by expert (a stable counting sort), offsets
- grouped_gemm.moe_gate_up_kernel  grouped x @ w13.T, activation (and multiply) fused
- grouped_gemm.moe_down_kernel     grouped h @ w2.T, bias and routing weight fused, scattered
- combine.moe_combine_kernel       sum over each token's top-k slots
"""

from .combine import moe_combine_kernel
from .group import moe_count_kernel, moe_scatter_kernel
from .grouped_gemm import moe_down_kernel, moe_gate_up_kernel

__all__ = [
    "moe_combine_kernel",
    "moe_count_kernel",
    "moe_down_kernel",
    "moe_gate_up_kernel",
    "moe_scatter_kernel",
]
