"""shared-fused-moe-only-api: arguments and attributes that only ``SharedFusedMoE`` had."""

from __future__ import annotations

import libcst as cst

from moe_migrate.codemod.outcomes import Severity
from moe_migrate.codemod.rule import Flagged, Unchanged
from moe_migrate.codemod.walk import children
from moe_migrate.rules._uses import TracksLayers, self_attribute, source
from moe_migrate.rules._vllm import NEW_CLASS, OLD_CLASS

#: Constructor arguments only the removed class took.
ONLY_ARGUMENTS = frozenset({"use_overlapped"})
#: Attributes only the removed class had: what it read each one for, and what to do instead
#: when a subclass sets one itself.
ONLY_ATTRIBUTES = {
    "use_overlapped": (
        "to choose whether the shared experts overlap the routed ones",
        "Drop it: FusedMoE decides that itself. Keep it only for this subclass's own use.",
    ),
    "_shared_experts": (
        "to run the shared experts",
        "Pass the module to FusedMoE's constructor as `shared_experts=`; keep the attribute only "
        "for this subclass's own use.",
    ),
}


class SharedFusedMoeOnlyApi(TracksLayers):
    """Warn about arguments and attributes only the removed `SharedFusedMoE` had.

    Why: `SharedFusedMoE` took `use_overlapped=` and kept the shared experts in
    `_shared_experts`; `FusedMoE` decides overlapping itself and its private attributes are
    not an interface. After the rename such an argument may be rejected or ignored, and such an
    attribute may be missing or mean something else.

    Fix safety: report only (a warning: the code may still work). Reported on calls that build
    the class, on layers assigned from them (`self.experts.use_overlapped`), and on `self`
    inside a subclass of it; the rename itself still happens. Where a subclass sets such an
    attribute itself, the assignment is reported (`FusedMoE` never reads it) and the
    subclass's own reads of it are not.
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
        Flagged(
            "from vllm.model_executor.layers.fused_moe import SharedFusedMoE\n\n\n"
            "class NPUMoE(SharedFusedMoE):\n"
            "    def attach(self, mlp):\n"
            "        self._shared_experts = mlp\n\n"
            "    def shared(self, x):\n"
            "        return self._shared_experts(x)\n",
            lines=(6,),
            note="a subclass that sets the attribute itself: reported where it is set, not where it is read",
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

    def visit_Module(self, node: cst.Module) -> None:
        super().visit_Module(node)
        #: Per class being visited: the attributes it assigns on ``self`` itself.
        self._own: list[set[str]] = []
        #: ids of the ``self.X`` nodes that are assigned to.
        self._own_targets: set[int] = set()

    def visit_Assign(self, node: cst.Assign) -> None:
        self._own_targets.update(id(t.target) for t in node.targets)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self._own_targets.add(id(node.target))

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        self._own_targets.add(id(node.target))

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        super().visit_ClassDef(node)
        self._own.append(_assigned_on_self(node) if self.in_subclass() else set())

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        super().leave_ClassDef(original_node)
        self._own.pop()

    def visit_Attribute(self, node: cst.Attribute) -> None:
        if node.attr.value not in ONLY_ATTRIBUTES:
            return
        on_self = self_attribute(node) is not None and self.in_subclass()
        if on_self and node.attr.value in self._own[-1]:
            if id(node) in self._own_targets:
                purpose, fix = ONLY_ATTRIBUTES[node.attr.value]
                self.flag(
                    node,
                    f"This subclass of vLLM's removed `{OLD_CLASS}` sets `self.{node.attr.value}`, "
                    f"which the removed class read {purpose}; `{NEW_CLASS}` never reads it, so "
                    "setting it changes nothing but this subclass's own code.",
                    fix=fix,
                )
            return  # the subclass's own attribute: its reads are its own business
        if self.is_layer(node.value) or on_self:
            self.flag(
                node,
                f"`{source(node)}` is an attribute of vLLM's removed `{OLD_CLASS}`; on "
                f"`{NEW_CLASS}` it may be missing or mean something else.",
                fix="Keep your own reference to the module you pass as `shared_experts=`, "
                "or use the layer's public API.",
            )


def _assigned_on_self(cls: cst.ClassDef) -> set[str]:
    """``X`` of every ``self.X = ...`` (or ``+=``, annotated) in the methods of ``cls``."""
    found: set[str] = set()
    stack: list[cst.CSTNode] = [cls.body]
    while stack:
        node = stack.pop()
        targets: list[cst.BaseExpression] = []
        if isinstance(node, cst.Assign):
            targets = [t.target for t in node.targets]
        elif isinstance(node, (cst.AnnAssign, cst.AugAssign)):
            targets = [node.target]
        found.update(a for a in map(self_attribute, targets) if a is not None)
        if not isinstance(node, cst.ClassDef):  # a nested class's `self` is another object
            stack.extend(children(node))
    return found
