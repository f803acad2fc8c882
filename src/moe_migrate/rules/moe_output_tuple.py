"""moe-output-tuple: code that relies on ``SharedFusedMoE`` returning ``(shared_out, fused_out)``."""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from moe_migrate.codemod.rule import Flagged, Unchanged
from moe_migrate.rules._uses import TracksLayers, callee, source
from moe_migrate.rules._vllm import NEW_CLASS, OLD_CLASS, bound_to

_LAYER = (
    "from vllm.model_executor.layers.fused_moe import SharedFusedMoE\n\n\n"
    "class MoEBlock:\n"
    "    def __init__(self, config):\n"
    "        self.experts = SharedFusedMoE(shared_experts=self.shared_mlp, num_experts=8)\n\n"
    "    def forward(self, hidden_states, router_logits):\n"
)


#: What ``cast`` must be imported as, and ``typing`` for ``typing.cast``.
_CASTS = frozenset({"typing.cast", "typing_extensions.cast"})
_TYPING = frozenset({"typing", "typing_extensions"})


@dataclass(frozen=True)
class _Layer:
    """A layer whose output is unpacked: as spelled, and whether it was built as FusedMoE."""

    name: str
    fused: bool


@dataclass(frozen=True)
class _Local:
    """What a local holds: the output of ``layer`` or, with ``alias``, the layer itself."""

    layer: _Layer
    alias: bool = False


class MoeOutputTuple(TracksLayers):
    """Flag code that unpacks or indexes the output of a layer built as `SharedFusedMoE`.

    Why: vLLM's `SharedFusedMoE.forward` returned a `(shared_out, fused_out)` pair, and model
    code unpacked it (`shared_out, routed_out = self.experts(...)`) or indexed it (`out[0]`).
    `FusedMoE` returns one tensor with the shared experts' output already added: unpacking it
    fails or, with two tokens, silently splits the batch, and `out[0]` silently takes a row.
    The same holds for a subclass whose `forward` returns a pair, and for a layer built as
    `FusedMoE` with `shared_experts=` (`None` included: the class returned `(None, fused_out)`
    then): that is what the rename makes of the class, so the finding stays until the code is
    fixed, and code renamed by hand is checked too. The layer may be reached through a local
    (`fused = self.experts`), through `typing.cast(SharedFusedMoE, ...)`, or through an
    annotation that names the class (`experts: SharedFusedMoE` in the class body, a local):
    a cast or an annotation to the class says the value is one. Once renamed, they name
    `FusedMoE`, which alone says nothing of shared experts: where nothing else in the file
    builds the layer, only the run that renames reports it.

    Fix safety: report only. The rename of the layer's class still happens; the code that
    consumes the output is for a human, who usually deletes the separate shared-expert
    addition. On a tree that defines a `SharedFusedMoE` that is not trivial (vLLM or a fork),
    `shared-fused-moe-not-trivial` lists these call sites in its finding at the definition.
    """

    ID = "moe-output-tuple"
    EXAMPLES = (
        Flagged(
            _LAYER + "        shared_out, routed_out = self.experts(hidden_states, router_logits)\n"
            "        return shared_out + routed_out\n",
            lines=(9,),
            note="unpacked",
        ),
        Flagged(
            _LAYER + "        out = self.experts(hidden_states=hidden_states, router_logits=router_logits)\n"
            "        return out[0] + out[1]\n",
            lines=(10,),
            note="indexed through a local",
        ),
        Flagged(
            _LAYER + "        out = self.experts(hidden_states, router_logits)\n"
            "        if self.has_shared_experts:\n            out = out[0] + out[1]\n"
            "        else:\n            out = out[1]\n        return out\n",
            lines=(11, 13),
            note="in both branches of an if",
        ),
        Flagged(
            "from vllm.model_executor.layers.fused_moe import SharedFusedMoE\n\n\n"
            "class NPUSharedFusedMoE(SharedFusedMoE):\n"
            "    def forward(self, hidden_states, router_logits):\n"
            "        shared_out = self._shared_experts(hidden_states)\n"
            "        return shared_out, self.routed(hidden_states)\n",
            lines=(7,),
            note="a subclass whose forward returns a pair",
        ),
        Unchanged(
            _LAYER + "        out = self.experts(hidden_states, router_logits)\n"
            "        return out[:, : self.hidden_size]\n",
            "a slice of one tensor",
        ),
        Unchanged(
            "from vllm.model_executor.layers.fused_moe import FusedMoE\n\n\n"
            "class MoEBlock:\n"
            "    def __init__(self):\n"
            "        self.experts = FusedMoE(shared_experts=self.shared_mlp, num_experts=8)\n\n"
            "    def forward(self, x, logits):\n"
            "        out = self.experts(x, logits)\n"
            "        if isinstance(out, tuple):\n"
            "            shared, out = out\n"
            "            out = out + shared\n"
            "        return out\n",
            "code that takes both a pair and one tensor",
        ),
        Unchanged(
            "from vllm.model_executor.layers.fused_moe import FusedMoE\n\n\n"
            "class MoEBlock:\n"
            "    def __init__(self):\n        self.experts = FusedMoE(num_experts=8)\n\n"
            "    def forward(self, x, logits):\n"
            "        a, b = self.experts(x, logits)\n        return a\n",
            "a layer built as FusedMoE without shared experts",
        ),
        Flagged(
            "from vllm.model_executor.layers.fused_moe import FusedMoE\n\n\n"
            "class MoEBlock:\n"
            "    def __init__(self):\n"
            "        self.experts = FusedMoE(shared_experts=self.shared_mlp, num_experts=8)\n\n"
            "    def forward(self, x, logits):\n"
            "        shared_out, routed_out = self.experts(x, logits)\n"
            "        return shared_out + routed_out\n",
            lines=(9,),
            note="after the rename (or one by hand): FusedMoE with shared experts",
        ),
        Flagged(
            "from vllm.model_executor.layers.fused_moe import FusedMoE\n\n\n"
            "def routed_output(h, r):\n"
            "    m = FusedMoE(shared_experts=None, num_experts=8)\n"
            "    shared, routed = m(h, r)\n"
            "    return routed\n",
            lines=(6,),
            note="FusedMoE(shared_experts=None): the rename of SharedFusedMoE(shared_experts=None)",
        ),
        Flagged(
            _LAYER + "        fused = self.experts\n"
            "        shared_out, routed_out = fused(hidden_states, router_logits)\n"
            "        return shared_out + routed_out\n",
            lines=(10,),
            note="through a local that holds the layer",
        ),
        Flagged(
            "from typing import cast\n\n"
            "from vllm.model_executor.layers.fused_moe import SharedFusedMoE\n\n\n"
            "class MoEBlock:\n"
            "    def forward(self, hidden_states, router_logits):\n"
            "        fused_experts = cast(SharedFusedMoE, self.experts)\n"
            "        shared_out, routed_out = fused_experts(hidden_states=hidden_states, router_logits=router_logits)\n"
            "        return shared_out + routed_out\n",
            lines=(9,),
            note="a cast to the class, wherever the layer was built",
        ),
        Flagged(
            "from vllm.model_executor.layers.fused_moe import SharedFusedMoE\n\n\n"
            "class MoEBlock:\n"
            "    experts: SharedFusedMoE\n\n"
            "    def forward(self, hidden_states, router_logits):\n"
            "        out = self.experts(hidden_states, router_logits)\n"
            "        return out[0] + out[1]\n",
            lines=(9,),
            note="an annotation in the class body",
        ),
        Flagged(
            "from typing import cast\n\n"
            "from vllm.model_executor.layers.fused_moe import FusedMoE\n\n\n"
            "class MoEBlock:\n"
            "    def __init__(self):\n"
            "        self.experts = FusedMoE(shared_experts=self.shared_mlp, num_experts=8)\n\n"
            "    def forward(self, x, logits):\n"
            "        fused = cast(FusedMoE, self.experts)\n"
            "        shared_out, routed_out = fused(x, logits)\n"
            "        return shared_out + routed_out\n",
            lines=(12,),
            note="after the rename: a cast to FusedMoE of a layer with shared experts",
        ),
        Unchanged(
            "from vllm.model_executor.layers.fused_moe import FusedMoE\n\n\n"
            "class MoEBlock:\n"
            "    def __init__(self):\n"
            "        self.experts = FusedMoE(num_experts=8)\n"
            "        self.shared = FusedMoE(shared_experts=self.shared_mlp, num_experts=8)\n\n"
            "    def forward(self, x, logits):\n"
            "        experts = self.experts\n"
            "        a, b = experts(x, logits)\n        return a\n",
            "a local holding a FusedMoE built without shared experts",
        ),
        Unchanged(
            "from typing import cast\n\n"
            "from vllm.model_executor.layers.fused_moe import FusedMoE\n\n\n"
            "class MoEBlock:\n"
            "    def forward(self, x, logits):\n"
            "        fused = cast(FusedMoE, self.experts)\n"
            "        a, b = fused(x, logits)\n        return a\n",
            "a cast to FusedMoE alone, of a layer built elsewhere",
        ),
        Unchanged(
            "from typing import cast\n\n"
            "from vllm.model_executor.layers.fused_moe import SharedFusedMoE\n\n\n"
            "class MoEBlock:\n"
            "    def forward(self, x, logits):\n"
            "        out = cast(SharedFusedMoE, self.experts)(x, logits)\n"
            "        if isinstance(out, tuple):\n"
            "            shared, out = out\n"
            "            out = out + shared\n"
            "        return out\n",
            "a cast to the class, with code that takes both a pair and one tensor",
        ),
        Unchanged(
            "from typing import cast\n\n"
            "from vllm.model_executor.layers.fused_moe import SharedFusedMoE\n\n\n"
            "class MoEBlock:\n"
            "    def __init__(self, exact):\n"
            "        self.experts = exact or SharedFusedMoE(shared_experts=self.mlp)\n\n"
            "    def forward(self, x, logits):\n"
            "        experts = cast(ExactExperts, self.experts)\n"
            "        out, aux = experts(x, logits)\n        return out\n",
            "a cast to another type: the value is that type now",
        ),
        Flagged(
            "from vllm.model_executor.layers.fused_moe import FusedMoE\n\n\n"
            "class AriaFusedMoE(FusedMoE):\n"
            "    def weight_loader(self, param, weight):\n        param.copy_(weight)\n\n\n"
            "class MoEBlock:\n"
            "    def __init__(self):\n"
            "        self.experts = AriaFusedMoE(shared_experts=self.shared_mlp, num_experts=8)\n\n"
            "    def forward(self, x, logits):\n"
            "        out = self.experts(x, logits)\n"
            "        return out[0] + out[1]\n",
            lines=(15,),
            note="a subclass of FusedMoE that keeps its forward",
        ),
        Unchanged(
            "from vllm.model_executor.layers.fused_moe import FusedMoE\n\n\n"
            "class PairFusedMoE(FusedMoE):\n"
            "    def forward(self, x, logits):\n        return self.shared(x), super().forward(x, logits)\n\n\n"
            "class MoEBlock:\n"
            "    def __init__(self):\n"
            "        self.experts = PairFusedMoE(shared_experts=self.shared_mlp, num_experts=8)\n\n"
            "    def forward(self, x, logits):\n"
            "        shared, routed = self.experts(x, logits)\n        return shared + routed\n",
            "a subclass of FusedMoE with a forward of its own",
        ),
    )

    def visit_Module(self, node: cst.Module) -> None:
        super().visit_Module(node)
        #: Per function: local name -> the layer whose output it holds, or the layer itself.
        self._locals: list[dict[str, _Local]] = [{}]
        #: Per function: locals whose output is tested with `isinstance(x, tuple)`.
        self._guarded: list[set[str]] = [set()]
        self._pair_forward: cst.FunctionDef | None = None
        self._statement: cst.CSTNode | None = None
        self._reported: set[int] = set()
        #: Per open `if`: the locals before it, and at the end of its body.
        self._branches: list[tuple[dict[str, _Local], dict[str, _Local]]] = []

    # A local may hold the output after either branch of an `if`: `else` starts from the state
    # before the `if`, and what each branch left is merged after it.

    def visit_If(self, node: cst.If) -> None:
        self._branches.append((dict(self._locals[-1]), {}))

    def leave_If_body(self, node: cst.If) -> None:
        before, body_end = self._branches[-1]
        held = self._locals[-1]
        body_end.update(held)
        held.clear()
        held.update(before)

    def leave_If(self, original_node: cst.If) -> None:
        self._locals[-1].update(self._branches.pop()[1])

    def visit_SimpleStatementLine(self, node: cst.SimpleStatementLine) -> None:
        self._statement = node

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        super().visit_FunctionDef(node)
        self._locals.append({})
        self._guarded.append(set())
        if node.name.value == "forward" and self.in_subclass() and self._pair_forward is None:
            self._pair_forward = node

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        super().leave_FunctionDef(original_node)
        self._locals.pop()
        self._guarded.pop()
        if self._pair_forward is original_node:
            self._pair_forward = None

    def visit_Call(self, node: cst.Call) -> None:
        # `isinstance(out, tuple)`: the code takes both a pair and one tensor, as code written
        # for plugins that still return a pair does. What it does with `out` is its own.
        if callee(node) == "isinstance" and len(node.args) == 2 and isinstance(node.args[0].value, cst.Name):
            types = node.args[1].value
            names = [e.value for e in types.elements] if isinstance(types, cst.Tuple) else [types]
            if any(isinstance(n, cst.Name) and n.value == "tuple" for n in names):
                self._guarded[-1].add(node.args[0].value.value)

    def _output_of(self, expr: cst.BaseExpression) -> _Layer | None:
        """The layer whose output ``expr`` is: ``self.experts(...)`` or a local holding it."""
        if isinstance(expr, cst.Call):
            func = expr.func
            if isinstance(func, cst.Attribute) and func.attr.value == "forward" and self._built(func.value) is not None:
                func = func.value  # `self.experts.forward(...)`
            fused = self._built(func)
            return None if fused is None else _Layer(source(func), fused)
        if isinstance(expr, cst.Name) and expr.value not in self._guarded[-1]:
            held = self._locals[-1].get(expr.value)
            return held.layer if held is not None and not held.alias else None
        return None

    def _built(self, expr: cst.BaseExpression) -> bool | None:
        """Whether ``expr`` holds a layer built as ``FusedMoE`` (True) or as the class (False);
        None when it holds no layer.

        Besides the layers the shared analysis found (built or annotated), a local assigned one
        (``fused = self.experts``) holds it, and so does ``typing.cast(T, layer)``, which is
        ``layer`` itself; a cast to the class says that whatever it casts is one.
        """
        if self.is_layer(expr) or self.held_in(self.uses.annotated_layers, expr):
            return False
        if self.is_layer(expr, fused=True):
            return True
        if isinstance(expr, cst.Name):
            held = self._locals[-1].get(expr.value)
            return held.layer.fused if held is not None and held.alias else None
        if self._is_cast(expr):
            kind, value = expr.args  # type: ignore[attr-defined]
            built = self._built(value.value)
            if id(kind.value) in self.uses.class_exprs:
                return False if built is None else built
            # A cast to another type narrows the value to something else (`SharedFusedMoE |
            # Mine` cast to `Mine`): only a cast to FusedMoE still holds the layer.
            return built if id(kind.value) in self.uses.fused_exprs else None
        return None

    def _is_cast(self, expr: cst.BaseExpression) -> bool:
        """``expr`` is ``cast(T, value)`` with ``cast`` imported from ``typing`` (or
        ``typing_extensions``), or ``typing.cast(T, value)``."""
        if not (isinstance(expr, cst.Call) and len(expr.args) == 2):
            return False
        if any(arg.keyword is not None or arg.star for arg in expr.args):
            return False
        scope = self.analysis.scopes.get(expr)
        if scope is None:
            return False
        func = expr.func
        if isinstance(func, cst.Name):
            return bound_to(scope, func.value, _CASTS, self.file) is True
        if isinstance(func, cst.Attribute) and func.attr.value == "cast" and isinstance(func.value, cst.Name):
            return bound_to(scope, func.value.value, _TYPING, self.file) is True
        return False

    def leave_Assign(self, original_node: cst.Assign) -> None:
        for target in original_node.targets:
            self._bind(original_node, target.target, original_node.value)

    def leave_AnnAssign(self, original_node: cst.AnnAssign) -> None:
        if original_node.value is not None:
            self._bind(original_node, original_node.target, original_node.value)

    def _bind(self, node: cst.CSTNode, target: cst.BaseExpression, value: cst.BaseExpression) -> None:
        """``target = value``: report an unpacked output; note what a local now holds."""
        layer = self._output_of(value)
        held = self._locals[-1]
        if isinstance(target, (cst.Tuple, cst.List)) and layer is not None:
            self._report(node, layer, "unpacks")
        elif isinstance(target, cst.Name):
            # Assigned after the right-hand side was read: `out = out[0] + out[1]` is a use.
            if layer is not None and isinstance(value, cst.Call):
                held[target.value] = _Local(layer)
            elif (fused := self._built(value)) is not None:
                held[target.value] = _Local(_Layer(source(value), fused), alias=True)
            else:
                held.pop(target.value, None)

    def visit_Subscript(self, node: cst.Subscript) -> None:
        layer = self._output_of(node.value)
        index = node.slice[0].slice if len(node.slice) == 1 else None
        if layer is not None and isinstance(index, cst.Index) and isinstance(index.value, cst.Integer):
            self._report(node, layer, "indexes")

    def visit_Return(self, node: cst.Return) -> None:
        if self._pair_forward is not None and self._functions[-1] is self._pair_forward:
            if isinstance(node.value, cst.Tuple) and len(node.value.elements) == 2:
                self.flag(
                    node,
                    f"This `forward` of a `{OLD_CLASS}` subclass returns a pair, as the removed "
                    f"class did; code written for `{NEW_CLASS}` expects one tensor with the "
                    "shared experts' output already added.",
                    fix="Return one tensor (the routed output plus the shared experts' output) "
                    f"once the class derives from `{NEW_CLASS}`.",
                )

    def _report(self, node: cst.CSTNode, layer: _Layer, how: str) -> None:
        if id(self._statement) in self._reported:
            return  # `out[0] + out[1]`: one finding for the statement
        self._reported.add(id(self._statement))
        if layer.fused:
            what = (
                f"vLLM's `{NEW_CLASS}` built with `shared_experts=`. Since `{OLD_CLASS}` was removed "
                f"(vLLM 0.20), `{NEW_CLASS}.forward` no longer returns `(shared_out, fused_out)`"
            )
        else:
            what = f"built from vLLM's `{OLD_CLASS}`, whose `forward` returned `(shared_out, fused_out)`"
        self.flag(
            node,
            f"This {how} the output of `{layer.name}`, {what}. `{NEW_CLASS}` returns one tensor "
            "with the shared experts' output already added: unpacking it fails (or, with two "
            "tokens, silently splits the batch) and `[0]`/`[1]` silently take rows.",
            fix="Use the layer's output as the final hidden states, and drop the separate "
            "addition of the shared experts' output.",
        )
