"""Top-k routing with the semantics of vLLM 0.19.1's FusedMoE routers, in vectorised torch.

vLLM picks one router per layer (``create_fused_moe_router``), in this order:

1. grouped top-k   (``use_grouped_topk``; DeepSeek-V2/V3): score, keep the best
   ``topk_group`` of ``num_expert_group`` groups, top-k inside them; the correction
   bias steers the choice only; renormalise; scale by ``routed_scaling_factor``;
2. custom          (``custom_routing_function``): called as is, nothing added;
3. biased top-k    (``e_score_correction_bias``): bias for the choice, unbiased
   weights; renormalise; scale;
4. plain top-k     (everything else): softmax or sigmoid, top-k, renormalise. This
   router ignores ``routed_scaling_factor``, as vLLM's does.

Every function returns ``(topk_weights, topk_ids)``: float32 and int32, both ``[T, top_k]``.
Scores are computed in float32 whatever the logits' dtype, as vLLM's fused top-k does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

SCORING_FUNCS = ("softmax", "sigmoid")
ROUTERS = ("grouped", "custom", "biased", "plain")

RoutingFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


@dataclasses.dataclass(frozen=True, eq=False)
class RoutingConfig:
    """The routing-related constructor arguments of one FusedMoE layer."""

    num_experts: int
    top_k: int
    renormalize: bool = True
    scoring_func: str = "softmax"
    use_grouped_topk: bool = False
    num_expert_group: int | None = None
    topk_group: int | None = None
    routed_scaling_factor: float = 1.0
    e_score_correction_bias: torch.Tensor | None = None
    custom_routing_function: RoutingFn | None = None


def check_config(config: RoutingConfig) -> None:
    """Raise ValueError for a configuration vLLM would refuse."""
    if config.scoring_func not in SCORING_FUNCS:
        raise ValueError(
            f"unsupported scoring_func {config.scoring_func!r}; expected one of {SCORING_FUNCS}"
        )
    if not 1 <= config.top_k <= config.num_experts:
        raise ValueError(f"top_k={config.top_k} must be in [1, num_experts={config.num_experts}]")
    if config.use_grouped_topk:
        if config.num_expert_group is None or config.topk_group is None:
            raise ValueError("use_grouped_topk=True needs num_expert_group and topk_group")
        if config.custom_routing_function is not None:
            raise ValueError("use_grouped_topk=True excludes custom_routing_function")
    bias = config.e_score_correction_bias
    if bias is not None and tuple(bias.shape) != (config.num_experts,):
        raise ValueError(
            f"e_score_correction_bias has shape {tuple(bias.shape)}, "
            f"expected ({config.num_experts},)"
        )


def router_kind(config: RoutingConfig) -> str:
    """Which of ROUTERS vLLM's ``create_fused_moe_router`` would build for ``config``."""
    if config.use_grouped_topk and not _grouping_degenerates(config):
        return "grouped"
    if config.custom_routing_function is not None:
        return "custom"
    if config.e_score_correction_bias is not None:
        return "biased"
    return "plain"


def _grouping_degenerates(config: RoutingConfig) -> bool:
    # vLLM falls back from grouped routing when there is one group, one group kept and no
    # routing method it recognises (get_routing_method_type says "Unspecified").
    groups, kept = config.num_expert_group or 0, config.topk_group or 0
    if config.e_score_correction_bias is not None:
        recognised = groups > 0 and config.scoring_func == "sigmoid"  # DeepSeek-V3
    else:
        recognised = config.scoring_func == "softmax" or config.top_k == 1
    return groups <= 1 and kept <= 1 and not recognised


def select_experts(
    hidden_states: torch.Tensor, router_logits: torch.Tensor, config: RoutingConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Route each token: hidden_states [T, H], router_logits [T, E] -> ([T, k] f32, [T, k] i32)."""
    if router_logits.shape != (hidden_states.shape[0], config.num_experts):
        raise ValueError(
            f"router_logits has shape {tuple(router_logits.shape)}, expected "
            f"({hidden_states.shape[0]}, {config.num_experts})"
        )
    kind = router_kind(config)
    if kind == "grouped":
        return grouped_topk(router_logits, config)
    if kind == "custom":
        return custom_topk(hidden_states, router_logits, config)
    if kind == "biased":
        return biased_topk(router_logits, config)
    return plain_topk(router_logits, config.top_k, config.renormalize, config.scoring_func)


def score(router_logits: torch.Tensor, scoring_func: str) -> torch.Tensor:
    """Scores [T, E] in float32: softmax over the experts, or an element-wise sigmoid."""
    logits = router_logits.float()
    if scoring_func == "softmax":
        return torch.softmax(logits, dim=-1)
    if scoring_func == "sigmoid":
        return torch.sigmoid(logits)
    raise ValueError(f"unsupported scoring_func {scoring_func!r}")


def plain_topk(
    router_logits: torch.Tensor, top_k: int, renormalize: bool, scoring_func: str = "softmax"
) -> tuple[torch.Tensor, torch.Tensor]:
    """vLLM's ``fused_topk``: the top-k scores, renormalised on request, never scaled."""
    weights, ids = torch.topk(score(router_logits, scoring_func), top_k, dim=-1)
    return _finish(weights, ids, renormalize, 1.0)


def biased_topk(
    router_logits: torch.Tensor, config: RoutingConfig, scoring_func: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """vLLM's ``fused_topk_bias``: choose by score + bias, weigh by the unbiased score."""
    scores = score(router_logits, scoring_func or config.scoring_func)
    bias = _bias(config, scores)
    ids = torch.topk(scores + bias, config.top_k, dim=-1).indices
    return _finish(scores.gather(1, ids), ids, config.renormalize, config.routed_scaling_factor)


def grouped_topk(
    router_logits: torch.Tensor, config: RoutingConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """vLLM's ``grouped_topk`` (DeepSeek-V2/V3), including its fallbacks.

    A group's score is its best expert score, or, with a correction bias, the sum of its
    two best biased scores. Experts outside the ``topk_group`` best groups are masked.
    """
    num_experts = config.num_experts
    groups = config.num_expert_group or 0
    if num_experts <= groups or groups <= 0 or num_experts % groups != 0:
        # vLLM's fallback for a grouping that does not divide the experts: it calls the
        # ungrouped helpers without forwarding scoring_func, so they score with softmax.
        if config.e_score_correction_bias is not None:
            return biased_topk(router_logits, config, scoring_func="softmax")
        return plain_topk(router_logits, config.top_k, config.renormalize, "softmax")

    scores = score(router_logits, config.scoring_func)
    num_tokens = scores.shape[0]
    per_group = num_experts // groups
    if config.e_score_correction_bias is not None:
        choice = scores + _bias(config, scores)
        grouped = choice.view(num_tokens, groups, per_group)
        group_scores = grouped.topk(min(2, per_group), dim=-1).values.sum(dim=-1)
    else:
        choice = scores
        group_scores = choice.view(num_tokens, groups, per_group).amax(dim=-1)

    kept = torch.topk(group_scores, config.topk_group or 0, dim=-1).indices  # [T, topk_group]
    group_mask = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, kept, True)
    expert_mask = group_mask.repeat_interleave(per_group, dim=1)  # [T, E]
    masked = choice.masked_fill(~expert_mask, float("-inf"))
    ids = torch.topk(masked, config.top_k, dim=-1).indices
    weights = scores.gather(1, ids)
    return _finish(weights, ids, config.renormalize, config.routed_scaling_factor)


def custom_topk(
    hidden_states: torch.Tensor, router_logits: torch.Tensor, config: RoutingConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Call the model's own routing function with vLLM's keyword arguments."""
    assert config.custom_routing_function is not None
    weights, ids = config.custom_routing_function(
        hidden_states=hidden_states,
        gating_output=router_logits,
        topk=config.top_k,
        renormalize=config.renormalize,
    )
    return weights.to(torch.float32), ids.to(torch.int32)


def llama4_custom_routing(
    hidden_states: torch.Tensor, gating_output: torch.Tensor, topk: int, renormalize: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Llama 4's ``custom_routing_function``: top-k of the logits, then a sigmoid of each.

    ``renormalize`` is accepted and ignored, as in the model.
    """
    del hidden_states, renormalize
    values, ids = torch.topk(gating_output, topk, dim=-1)
    return torch.sigmoid(values.float()), ids.to(torch.int32)


# Routing functions known by the name a call site spells them with.
KNOWN_CUSTOM_ROUTING: dict[str, RoutingFn] = {
    "Llama4MoE.custom_routing_function": llama4_custom_routing,
}


def _bias(config: RoutingConfig, scores: torch.Tensor) -> torch.Tensor:
    assert config.e_score_correction_bias is not None
    return config.e_score_correction_bias.to(device=scores.device, dtype=torch.float32)[None, :]


def _finish(
    weights: torch.Tensor, ids: torch.Tensor, renormalize: bool, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    weights = weights.float()
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    if scale != 1.0:
        weights = weights * scale
    return weights, ids.to(torch.int32)
