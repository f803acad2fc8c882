"""The bundled FusedMoE: vLLM 0.19.1's constructor signature, computed on one device.

    layer = FusedMoE(**call_site_kwargs)          # exactly vLLM's keyword arguments
    init_weights(layer, seed=0, device="cuda")    # deterministic weights, then the device
    out = layer(hidden_states)                    # Triton kernels; [T, H] -> [T, H]
    ref = layer.forward_reference(hidden_states)  # the plain-torch loop, same routing
    layer.device, layer.backend, layer.notes

``forward`` returns one tensor, the routed experts' output with the shared experts' output
already added (FusedMoE after the removal of SharedFusedMoE). Arguments that only matter
across devices (parallel sizes, quantization, expert load balancing) are accepted, ignored,
and recorded in ``layer.notes`` when they ask for something.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

import torch

from . import reference, routing

BACKENDS = ("kernels", "reference")


class FusedMoE(torch.nn.Module):
    """A mixture-of-experts layer with vLLM's ``FusedMoE.__init__`` signature.

    Parameters, as in vLLM (shapes for one device, no tensor-parallel split):
        w13_weight [E, 2I, H] (is_act_and_mul) or [E, I, H];  w13_bias [E, 2I | I]
        w2_weight  [E, H, I];                                  w2_bias  [E, H]
    """

    def __init__(
        self,
        num_experts: int,
        top_k: int,
        hidden_size: int,
        intermediate_size: int,
        params_dtype: torch.dtype | None = None,
        reduce_results: bool = False,
        renormalize: bool = True,
        use_grouped_topk: bool = False,
        num_expert_group: int | None = None,
        topk_group: int | None = None,
        quant_config: Any | None = None,
        tp_size: int | None = None,
        ep_size: int | None = None,
        dp_size: int | None = None,
        pcp_size: int | None = None,
        prefix: str = "",
        custom_routing_function: Callable | str | None = None,
        scoring_func: str = "softmax",
        routed_scaling_factor: float = 1.0,
        e_score_correction_bias: torch.Tensor | None = None,
        apply_router_weight_on_input: bool = False,
        activation: str = "silu",
        is_act_and_mul: bool = True,
        enable_eplb: bool = False,
        num_redundant_experts: int = 0,
        has_bias: bool = False,
        is_sequence_parallel=False,
        expert_mapping: list[tuple[str, str, int, str]] | None = None,
        n_shared_experts: int | None = None,
        router_logits_dtype: torch.dtype | None = None,
        gate: torch.nn.Module | None = None,
        shared_experts: torch.nn.Module | None = None,
        routed_input_transform: torch.nn.Module | None = None,
    ):
        super().__init__()
        self.params_dtype = params_dtype if params_dtype is not None else torch.get_default_dtype()
        self.layer_name = prefix
        self.num_experts = num_experts
        self.top_k = top_k
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.apply_router_weight_on_input = apply_router_weight_on_input
        self.activation = reference.resolve_activation(activation, is_act_and_mul)
        self.has_bias = has_bias
        self.router_logits_dtype = router_logits_dtype
        self.expert_mapping = expert_mapping
        self.gate = gate
        self.shared_experts = shared_experts
        self.routed_input_transform = routed_input_transform

        self.notes: list[str] = []
        routing_fn = self._resolve_routing_function(custom_routing_function)
        self.routing = routing.RoutingConfig(
            num_experts=num_experts,
            top_k=top_k,
            renormalize=renormalize,
            scoring_func=scoring_func,
            use_grouped_topk=use_grouped_topk,
            num_expert_group=num_expert_group,
            topk_group=topk_group,
            routed_scaling_factor=routed_scaling_factor,
            e_score_correction_bias=e_score_correction_bias,
            custom_routing_function=routing_fn,
        )
        routing.check_config(self.routing)
        self.router = routing.router_kind(self.routing)
        self.notes += _ignored_argument_notes(locals(), self.params_dtype)
        self.notes += self._semantic_notes()
        self._create_weights()

    # ----------------------------------------------------------------------------------
    # Construction helpers
    # ----------------------------------------------------------------------------------

    def _resolve_routing_function(self, fn: Callable | str | None) -> routing.RoutingFn | None:
        if fn is None or callable(fn):
            return fn
        for name, known in routing.KNOWN_CUSTOM_ROUTING.items():
            if fn == name or fn.endswith("." + name):
                return known
        self.notes.append(
            f"custom_routing_function {fn!r} is unknown: routed as if it were absent"
        )
        return None

    def _semantic_notes(self) -> list[str]:
        notes = []
        config = self.routing
        if config.use_grouped_topk and self.router != "grouped":
            notes.append(
                f"use_grouped_topk with num_expert_group={config.num_expert_group}, "
                f"topk_group={config.topk_group}: vLLM falls back to {self.router} routing"
            )
        if self.apply_router_weight_on_input and self.top_k != 1:
            notes.append(
                f"apply_router_weight_on_input with top_k={self.top_k}: vLLM implements "
                "top_k=1 only; here each slot's input is scaled by its own weight"
            )
        if self.router == "plain" and config.routed_scaling_factor != 1.0:
            notes.append(
                f"routed_scaling_factor={config.routed_scaling_factor}: vLLM's plain top-k "
                "router does not apply it, so neither does this layer"
            )
        if self.gate is not None and self.shared_experts is None:
            notes.append(
                "gate without shared_experts: vLLM does not call it; here it computes "
                "router logits only when forward gets router_logits=None"
            )
        return notes

    def _create_weights(self) -> None:
        inter = self.intermediate_size
        w13_rows = 2 * inter if self.activation.gated else inter
        shapes = {
            "w13_weight": (self.num_experts, w13_rows, self.hidden_size),
            "w2_weight": (self.num_experts, self.hidden_size, inter),
        }
        if self.has_bias:
            shapes["w13_bias"] = (self.num_experts, w13_rows)
            shapes["w2_bias"] = (self.num_experts, self.hidden_size)
        for name, shape in shapes.items():
            param = torch.nn.Parameter(torch.zeros(shape, dtype=self.params_dtype), False)
            self.register_parameter(name, param)

    # ----------------------------------------------------------------------------------
    # Where it runs
    # ----------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.w13_weight.device

    @property
    def backend(self) -> str:
        """How ``forward`` runs the kernels here: "triton" or "triton-interpreter"."""
        return backend_for(self.device)

    def describe(self) -> dict[str, Any]:
        """The resolved configuration, for reports."""
        config = self.routing
        return {
            "num_experts": self.num_experts,
            "top_k": self.top_k,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "dtype": str(self.params_dtype).removeprefix("torch."),
            "router": self.router,
            "scoring_func": config.scoring_func,
            "renormalize": config.renormalize,
            "num_expert_group": config.num_expert_group,
            "topk_group": config.topk_group,
            "e_score_correction_bias": config.e_score_correction_bias is not None,
            "routed_scaling_factor": config.routed_scaling_factor,
            "activation": self.activation.name,
            "has_bias": self.has_bias,
            "apply_router_weight_on_input": self.apply_router_weight_on_input,
            "shared_experts": self.shared_experts is not None,
            "gate": self.gate is not None,
            "routed_input_transform": self.routed_input_transform is not None,
        }

    # ----------------------------------------------------------------------------------
    # Forward
    # ----------------------------------------------------------------------------------

    def forward(
        self, hidden_states: torch.Tensor, router_logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[T, H] (and router logits [T, E], unless the gate computes them) -> [T, H]."""
        return self.run(hidden_states, router_logits, backend="kernels")

    def forward_reference(
        self, hidden_states: torch.Tensor, router_logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The same as ``forward`` through the plain-torch per-expert loop."""
        return self.run(hidden_states, router_logits, backend="reference")

    def run(
        self,
        hidden_states: torch.Tensor,
        router_logits: torch.Tensor | None = None,
        *,
        backend: str = "kernels",
    ) -> torch.Tensor:
        """Forward through one of BACKENDS: "kernels" (Triton) or "reference" (torch)."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
        experts = _kernels(self.device) if backend == "kernels" else reference
        x = hidden_states
        if self.routed_input_transform is not None:  # e.g. a latent projection (Nemotron-H)
            x = _first(self.routed_input_transform(hidden_states))
        router_logits = self._router_logits(x, router_logits)
        topk_weights, topk_ids = routing.select_experts(x, router_logits, self.routing)
        _check_ids(topk_ids, self.num_experts)
        routed = experts.fused_experts(
            x.to(self.w13_weight.dtype),  # the weights' dtype, also after layer.to(dtype)
            self.w13_weight,
            self.w2_weight,
            topk_weights,
            topk_ids,
            activation=self.activation,
            w13_bias=getattr(self, "w13_bias", None),
            w2_bias=getattr(self, "w2_bias", None),
            apply_router_weight_on_input=self.apply_router_weight_on_input,
        ).to(hidden_states.dtype)
        if self.shared_experts is None:
            return routed
        shared = _first(self.shared_experts(hidden_states))
        if shared.shape != routed.shape:
            raise ValueError(
                f"shared experts give {tuple(shared.shape)} but routed experts give "
                f"{tuple(routed.shape)}: cannot add them (a routed_input_transform that "
                "changes the width needs the model's own output projection)"
            )
        return routed + shared

    def _router_logits(
        self, x: torch.Tensor, router_logits: torch.Tensor | None
    ) -> torch.Tensor:
        # vLLM calls its gate itself when shared experts run beside the routed ones.
        if self.gate is not None and (self.shared_experts is not None or router_logits is None):
            return _first(self.gate(x))
        if router_logits is None:
            raise ValueError("router_logits is None and the layer has no gate")
        return router_logits


# --------------------------------------------------------------------------------------
# Building and initialising layers
# --------------------------------------------------------------------------------------


def constructor_parameters() -> tuple[str, ...]:
    """The keyword arguments FusedMoE accepts: vLLM 0.19.1's, in its order."""
    return tuple(inspect.signature(FusedMoE.__init__).parameters)[1:]


def build_layer(
    kwargs: dict[str, Any], *, seed: int = 0, device: torch.device | str | None = None
) -> FusedMoE:
    """FusedMoE(**kwargs) with deterministic weights on ``device`` (default: CPU)."""
    return init_weights(FusedMoE(**kwargs), seed, device=device)


def init_weights(
    layer: torch.nn.Module, seed: int = 0, *, device: torch.device | str | None = None
) -> torch.nn.Module:
    """Fill every parameter of ``layer`` (submodules included) from ``seed``; move it to ``device``.

    Values are drawn on the CPU in a fixed order (parameter names, sorted), so a seed gives
    the same layer on every device. Matrices get N(0, 1 / fan_in) entries, so activations
    stay of order one through the layer; vectors (biases) get N(0, 0.1^2).
    """
    generator = torch.Generator().manual_seed(seed)
    if device is not None:
        layer.to(device)
    with torch.no_grad():
        for _, param in sorted(layer.named_parameters(), key=lambda item: item[0]):
            scale = param.shape[-1] ** -0.5 if param.dim() >= 2 else 0.1
            values = torch.randn(param.shape, generator=generator) * scale
            param.copy_(values.to(param.dtype))
    return layer


def backend_for(device: torch.device | str) -> str:
    """"triton" where the kernels compile for ``device``, "triton-interpreter" otherwise."""
    if torch.device(device).type == "cpu" or _interpreter_on():
        return "triton-interpreter"
    return "triton"


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _kernels(device: torch.device):
    # Import the launchers lazily. On the CPU the kernels run only under the interpreter,
    # which must be switched on before they are first defined.
    if "moe_migrate.smoke.launch" not in sys.modules and device.type == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")
    from . import launch

    return launch


def _interpreter_on() -> bool:
    launch = sys.modules.get("moe_migrate.smoke.launch")
    if launch is not None:
        return launch.interpreted()
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _first(result: Any) -> torch.Tensor:
    # vLLM's linear layers return (output, bias); plain modules return the tensor.
    return result[0] if isinstance(result, tuple) else result


def _check_ids(topk_ids: torch.Tensor, num_experts: int) -> None:
    if topk_ids.numel() and not bool(((topk_ids >= 0) & (topk_ids < num_experts)).all()):
        raise ValueError(f"routing chose expert ids outside [0, {num_experts})")


_PARALLEL_ARGS = ("tp_size", "ep_size", "dp_size", "pcp_size")


def _ignored_argument_notes(args: dict[str, Any], dtype: torch.dtype) -> list[str]:
    """One note per argument that asks for something one device does not do."""
    notes = []
    if args["quant_config"] is not None:
        notes.append(
            f"quantization requested (quant_config={_short(args['quant_config'])}): "
            f"ignored, weights are {str(dtype).removeprefix('torch.')}"
        )
    parallel = [f"{name}={args[name]}" for name in _PARALLEL_ARGS if args[name] not in (None, 1)]
    if args["is_sequence_parallel"]:
        parallel.append("is_sequence_parallel=True")
    if parallel:
        notes.append(f"parallelism requested ({', '.join(parallel)}): ignored, one device")
    if args["enable_eplb"] or args["num_redundant_experts"]:
        notes.append(
            f"expert load balancing requested (enable_eplb={args['enable_eplb']}, "
            f"num_redundant_experts={args['num_redundant_experts']}): ignored"
        )
    if args["n_shared_experts"] is not None:
        notes.append(
            f"n_shared_experts={args['n_shared_experts']} (ROCm AITER fusion only): ignored"
        )
    return notes


def _short(value: Any) -> str:
    return repr(value) if isinstance(value, (str, int, float, bool)) else type(value).__name__
