"""@triton.jit kernels of the fused MoE forward pass; launch.py launches them.

- grouped_gemm.moe_gate_up_kernel  grouped x @ w13.T, activation (and multiply) fused
- grouped_gemm.moe_down_kernel     grouped h @ w2.T, bias and routing weight fused, scattered
- combine.moe_combine_kernel       sum over each token's top-k slots
"""

from .combine import moe_combine_kernel
from .grouped_gemm import moe_down_kernel, moe_gate_up_kernel

__all__ = ["moe_combine_kernel", "moe_down_kernel", "moe_gate_up_kernel"]
