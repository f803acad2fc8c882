"""Pure-torch reference for the fused MoE experts: the same function names as launch.py.

``fused_experts`` is the reference a forward pass is compared against: a plain loop over the
experts that shares nothing with the kernels but the routing. The stage functions
(``group_tokens``, ``grouped_gate_up``, ``grouped_down``, ``combine_topk``) mirror launch.py
one for one, so each kernel can be tested on its own. Everything is computed in float32 and
cast back to the input dtype at the end of each stage.

Shapes: T tokens, H hidden, I intermediate, E experts, k = top_k, S = T * k routed slots.
    hidden_states [T, H]        w13 [E, 2I, H] (gated) or [E, I, H]      w13_bias [E, 2I|I]
    topk_weights  [T, k] f32    w2  [E, H, I]                           w2_bias  [E, H]
    topk_ids      [T, k] int
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

SWIGLU_ALPHA = 1.702  # gpt-oss's swigluoai
SWIGLU_LIMIT = 7.0  # clamp of swigluoai and swiglustep


@dataclasses.dataclass(frozen=True)
class Activation:
    """How the gate/up GEMM's output becomes the down GEMM's input.

    ``gated``: w13 holds a gate and an up projection and the result is act(gate) * up;
    otherwise w13 holds one projection and the result is act(x).
    ``interleaved``: gate and up alternate along w13's rows (gpt-oss) instead of being
    its two halves.
    """

    name: str
    gated: bool
    interleaved: bool = False


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("silu", gated=True),
        Activation("gelu", gated=True),
        Activation("relu2", gated=True),
        Activation("swigluoai", gated=True, interleaved=True),
        Activation("swiglustep", gated=True),
        Activation("silu_no_mul", gated=False),
        Activation("gelu_no_mul", gated=False),
        Activation("relu2_no_mul", gated=False),
    )
}


def resolve_activation(activation: str, is_act_and_mul: bool = True) -> Activation:
    """vLLM's activation name plus ``is_act_and_mul`` -> one of ACTIVATIONS."""
    as_named = is_act_and_mul or activation.endswith("_no_mul")
    name = activation if as_named else activation + "_no_mul"
    if name not in ACTIVATIONS:
        raise ValueError(
            f"unsupported activation {activation!r} with is_act_and_mul={is_act_and_mul}; "
            f"supported: {sorted(ACTIVATIONS)}"
        )
    return ACTIVATIONS[name]


def apply_activation(h: torch.Tensor, activation: Activation) -> torch.Tensor:
    """[M, 2I] (gated) or [M, I] -> [M, I], in float32."""
    h = h.float()
    base = activation.name.removesuffix("_no_mul")
    if not activation.gated:
        return _act(base, h)
    if activation.interleaved:
        gate, up = h[:, 0::2], h[:, 1::2]
    else:
        gate, up = h.chunk(2, dim=-1)
    if base == "swigluoai":
        gate = gate.clamp(max=SWIGLU_LIMIT)
        up = up.clamp(-SWIGLU_LIMIT, SWIGLU_LIMIT)
        return gate * torch.sigmoid(SWIGLU_ALPHA * gate) * (up + 1.0)
    if base == "swiglustep":
        return F.silu(gate).clamp(max=SWIGLU_LIMIT) * up.clamp(-SWIGLU_LIMIT, SWIGLU_LIMIT)
    return _act(base, gate) * up


def _act(base: str, x: torch.Tensor) -> torch.Tensor:
    if base == "silu":
        return F.silu(x)
    if base == "gelu":
        return F.gelu(x)  # exact (erf) form, as vLLM's gelu_and_mul
    if base == "relu2":
        return torch.square(F.relu(x))
    raise ValueError(f"unsupported activation {base!r}")


# --------------------------------------------------------------------------------------
# The reference: a loop over experts.
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
    """out [T, H] = sum over k of weight * down(act(gate_up(x))) for each token's experts.

    With ``apply_router_weight_on_input`` the weight scales the expert's input instead.
    """
    act = resolve_activation(activation) if isinstance(activation, str) else activation
    x = hidden_states.float()
    out = torch.zeros_like(x)
    weights = topk_weights.float()
    for expert in range(w13.shape[0]):
        tokens, slots = torch.nonzero(topk_ids == expert, as_tuple=True)
        if tokens.numel() == 0:
            continue
        w = weights[tokens, slots][:, None]
        xe = x[tokens] * w if apply_router_weight_on_input else x[tokens]
        h = xe @ w13[expert].float().T
        if w13_bias is not None:
            h = h + w13_bias[expert].float()
        y = apply_activation(h, act) @ w2[expert].float().T
        if w2_bias is not None:
            y = y + w2_bias[expert].float()
        out.index_add_(0, tokens, y if apply_router_weight_on_input else y * w)
    return out.to(hidden_states.dtype)


# --------------------------------------------------------------------------------------
# The kernels' stages, one for one.
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ExpertGroups:
    """Routed slots grouped by expert.

    sorted_slots   [S]     flat slot indices t * k + j, ordered by expert (stable)
    expert_offsets [E + 1] int32: expert e owns sorted_slots[offsets[e]:offsets[e + 1]]
    """

    sorted_slots: torch.Tensor
    expert_offsets: torch.Tensor


def group_tokens(topk_ids: torch.Tensor, num_experts: int) -> ExpertGroups:
    """topk_ids [T, k] -> ExpertGroups, by a stable sort on the expert id."""
    flat = topk_ids.reshape(-1).long()
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=num_experts)
    offsets = torch.zeros(num_experts + 1, dtype=torch.int32, device=flat.device)
    offsets[1:] = torch.cumsum(counts, 0)
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
    slots = groups.sorted_slots.long()
    x = hidden_states.float()[slots // top_k]
    if apply_router_weight_on_input:
        x = x * topk_weights.reshape(-1).float()[slots][:, None]
    h = torch.empty(slots.numel(), _inter(w13, activation), device=x.device)
    for expert, rows in _expert_rows(groups):
        he = x[rows] @ w13[expert].float().T
        if w13_bias is not None:
            he = he + w13_bias[expert].float()
        h[rows] = apply_activation(he, activation)
    return h.to(hidden_states.dtype)


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
    slots = groups.sorted_slots.long()
    y = torch.empty(slots.numel(), w2.shape[1], device=h.device)
    for expert, rows in _expert_rows(groups):
        ye = h[rows].float() @ w2[expert].float().T
        if w2_bias is not None:
            ye = ye + w2_bias[expert].float()
        y[rows] = ye
    if mul_routed_weight:
        y = y * topk_weights.reshape(-1).float()[slots][:, None]
    out = torch.empty_like(y)
    out[slots] = y
    return out.to(h.dtype)


def combine_topk(y: torch.Tensor, top_k: int) -> torch.Tensor:
    """y [S, H] in slot order -> out [S / k, H]: the sum over each token's k slots."""
    return y.float().view(-1, top_k, y.shape[-1]).sum(dim=1).to(y.dtype)


def _inter(w13: torch.Tensor, activation: Activation) -> int:
    return w13.shape[1] // 2 if activation.gated else w13.shape[1]


def _expert_rows(groups: ExpertGroups):
    bounds = groups.expert_offsets.tolist()
    for expert in range(len(bounds) - 1):
        if bounds[expert + 1] > bounds[expert]:
            yield expert, slice(bounds[expert], bounds[expert + 1])
