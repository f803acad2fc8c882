"""shared-fused-moe-only-api: arguments and attributes that only ``SharedFusedMoE`` had."""

from __future__ import annotations

import libcst as cst

from moe_migrate.codemod.outcomes import Severity
from moe_migrate.codemod.rule import Flagged, Unchanged
from moe_migrate.rules._uses import TracksLayers, source
from moe_migrate.rules._vllm import NEW_CLASS, OLD_CLASS

#: Constructor arguments only the removed class took.
ONLY_ARGUMENTS = frozenset({"use_overlapped"})
#: Attributes only the removed class had.
ONLY_ATTRIBUTES = frozenset({"use_overlapped", "_shared_experts"})


class SharedFusedMoeOnlyApi(TracksLayers):
    """Warn about arguments and attributes only the removed `SharedFusedMoE` had.

    Why: `SharedFusedMoE` took `use_overlapped=` and kept the shared experts in
    `_shared_experts`; `FusedMoE` decides overlapping itself and its private attributes are
    not an interface. After the rename such an argument may be rejected or ignored, and such an
    attribute may be missing or mean something else.

    Fix safety: report only (a warning: the code may still work). Reported on calls that build
    the class, on layers assigned from them (`self.experts.use_overlapped`), and on `self`
    inside a subclass of it; the rename itself still happens.
    """

    ID = "shared-fused-moe-only-api"
    SEVERITY = Severity.WARNING
    EXAMPLES = (
        Flagged(
            "from vllm.model_executor.layers.fused_moe import SharedFusedMoE\n\n"
            "experts = SharedFusedMoE(shared_experts=mlp, use_overlapped=False, num_experts=8)\n",
            lines=(3,),
            note="an argument only the removed class took",
        ),
        Flagged(
            "from vllm.model_executor.layers.fused_moe import SharedFusedMoE\n\n\n"
            "class Block:\n"
            "    def __init__(self):\n"
            "        self.experts = SharedFusedMoE(shared_experts=mlp, num_experts=8)\n\n"
            "    def shared(self, x):\n"
            "        return self.experts._shared_experts(x)\n",
            lines=(9,),
            note="a private attribute of the removed class",
        ),
        Unchanged(
            "class LoRAMoE:\n"
            "    @property\n"
            "    def _shared_experts(self):\n"
            "        return self.base_layer._shared_experts\n",
            "the same attribute on something else",
        ),
    )

    def visit_Call(self, node: cst.Call) -> None:
        if id(node) in self.uses.constructions:
            for arg in node.args:
                if arg.keyword is not None and arg.keyword.value in ONLY_ARGUMENTS:
                    self.flag(
                        arg,
                        f"`{arg.keyword.value}=` was an argument of vLLM's removed `{OLD_CLASS}`; "
                        f"`{NEW_CLASS}` decides this itself and may reject or ignore it.",
                        fix="Remove the argument.",
                    )

    def visit_Attribute(self, node: cst.Attribute) -> None:
        if node.attr.value not in ONLY_ATTRIBUTES:
            return
        owner = node.value
        if self.is_layer(owner) or (
            isinstance(owner, cst.Name) and owner.value == "self" and self.in_subclass()
        ):
            self.flag(
                node,
                f"`{source(node)}` is an attribute of vLLM's removed `{OLD_CLASS}`; on "
                f"`{NEW_CLASS}` it may be missing or mean something else.",
                fix="Keep your own reference to the module you pass as `shared_experts=`, "
                "or use the layer's public API.",
            )
