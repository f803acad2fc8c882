"""Activation epilogues shared by the gate/up kernel.

Each code is a ``tl.constexpr`` so that the compiler keeps one branch per specialisation.
launch.py maps reference.ACTIVATIONS names to these codes.
"""

import triton
import triton.language as tl

SILU = tl.constexpr(0)
GELU = tl.constexpr(1)
RELU2 = tl.constexpr(2)
SWIGLUOAI = tl.constexpr(3)
SWIGLUSTEP = tl.constexpr(4)

SWIGLU_ALPHA = tl.constexpr(1.702)
SWIGLU_LIMIT = tl.constexpr(7.0)


@triton.jit
def activate(x, ACTIVATION: tl.constexpr):
    """act(x) for SILU, GELU (exact, erf form) and RELU2 (relu squared); x is float32."""
    if ACTIVATION == SILU:
        y = x * tl.sigmoid(x)
    elif ACTIVATION == GELU:
        y = 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))
    else:
        r = tl.maximum(x, 0.0)
        y = r * r
    return y


@triton.jit
def activate_and_mul(gate, up, ACTIVATION: tl.constexpr):
    """The gated epilogue act(gate) * up, with the clamps of the swiglu variants."""
    if ACTIVATION == SWIGLUOAI:
        g = tl.minimum(gate, SWIGLU_LIMIT)
        u = tl.clamp(up, -SWIGLU_LIMIT, SWIGLU_LIMIT)
        y = g * tl.sigmoid(g * SWIGLU_ALPHA) * (u + 1.0)
    elif ACTIVATION == SWIGLUSTEP:
        g = tl.minimum(activate(gate, SILU), SWIGLU_LIMIT)
        u = tl.clamp(up, -SWIGLU_LIMIT, SWIGLU_LIMIT)
        y = g * u
    else:
        y = activate(gate, ACTIVATION) * up
    return y
