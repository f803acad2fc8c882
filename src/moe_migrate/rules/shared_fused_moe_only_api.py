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
    subclass's own reads of it are not. What the renames make of these is reported too, so a
    second run or a CI check after the rewrite still warns: `use_overlapped=` on a call of
    vLLM's `FusedMoE` (its `__init__` rejects it), and the attributes read on a layer built as
    `FusedMoE(..., shared_experts=...)` or on `self` in a subclass of `FusedMoE` that does not
    set them itself (vLLM 0.20's `FusedMoE` has neither). A subclass of `FusedMoE` that sets
    one is left alone: it is its own attribute, as in plugins written for vLLM 0.20.
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
        Flagged(
            "from vllm.model_executor.layers.fused_moe import FusedMoE\n\n"
            "experts = FusedMoE(shared_experts=mlp, use_overlapped=False, num_experts=8)\n",
            lines=(3,),
            note="after the rename (or one by hand): FusedMoE rejects the argument",
        ),
        Flagged(
            "from vllm.model_executor.layers.fused_moe import FusedMoE\n\n\n"
            "def build(mlp):\n"
            "    experts = FusedMoE(shared_experts=mlp, num_experts=8)\n"
            "    if experts.use_overlapped:\n"
            "        return experts._shared_experts\n",
            lines=(6, 7),
            note="after the rename: the attributes on a layer built as FusedMoE with shared experts",
        ),
        Flagged(
            "from vllm.model_executor.layers.fused_moe import FusedMoE\n\n\n"
            "class NPUMoE(FusedMoE):\n"
            "    def shared(self, x):\n"
            "        return self._shared_experts(x)\n",
            lines=(6,),
            note="after the rename: a subclass of FusedMoE reading what it never set",
        ),
        Unchanged(
            "class LoRAMoE:\n"
            "    @property\n"
            "    def _shared_experts(self):\n"
            "        return self.base_layer._shared_experts\n",
            "the same attribute on something else",
        ),
        Unchanged(
            "from vllm.model_executor.layers.fused_moe import FusedMoE\n\n\n"
            "class AscendFusedMoE(FusedMoE):\n"
            "    def __init__(self, *args, **kwargs):\n"
            "        super().__init__(*args, **kwargs)\n"
            "        self.use_overlapped = True\n"
            '        self._shared_experts = kwargs.get("shared_experts")\n\n'
            "    def shared(self, x):\n"
            "        return self._shared_experts(x) if self.use_overlapped else None\n",
            "a subclass of FusedMoE with attributes of its own, written for vLLM 0.20",
        ),
        Unchanged(
            "from vllm.model_executor.layers.fused_moe import FusedMoE\n"
            "from vllm_npu.ops import NPUExperts\n\n"
            "experts = NPUExperts(shared_experts=mlp, use_overlapped=False)\n"
            "dense = FusedMoE(num_experts=8)\n"
            "overlap = dense.use_overlapped\n",
            "a plugin's own layer that takes the argument; FusedMoE without shared experts",
        ),
    )

    def visit_Call(self, node: cst.Call) -> None:
        if id(node) in self.uses.constructions:
            outcome = "may reject or ignore it"
        elif id(node) in self.uses.fused_calls:
            outcome = "does not take it: its `__init__` raises `TypeError`"
        else:
            return
        for arg in node.args:
            if arg.keyword is not None and arg.keyword.value in ONLY_ARGUMENTS:
                self.flag(
                    arg,
                    f"`{arg.keyword.value}=` was an argument of vLLM's removed `{OLD_CLASS}`; "
                    f"`{NEW_CLASS}` decides this itself and {outcome}.",
                    fix="Remove the argument.",
                )

    def visit_Module(self, node: cst.Module) -> None:
        super().visit_Module(node)
        #: Per class being visited (none at first): the attributes it assigns on ``self`` itself.
        self._own: list[set[str]] = [set()]
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
        subclass = self.in_subclass() or self.in_subclass(fused=True)
        self._own.append(_assigned_on_self(node) if subclass else set())

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        super().leave_ClassDef(original_node)
        self._own.pop()

    def visit_Attribute(self, node: cst.Attribute) -> None:
        if node.attr.value not in ONLY_ATTRIBUTES:
            return
        on_self = self_attribute(node) is not None
        own = on_self and node.attr.value in self._own[-1]
        if on_self and self.in_subclass() and own:
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
        if self.is_layer(node.value) or (on_self and self.in_subclass()):
            what = f"on `{NEW_CLASS}` it may be missing or mean something else"
        elif _plain(node) and (
            self.is_layer(node.value, fused=True) or (on_self and not own and self.in_subclass(fused=True))
        ):
            # What the renames make of the two cases above (or code migrated by hand).
            what = f"`{NEW_CLASS}` kept it for that class and no longer has it since vLLM 0.20"
        else:
            return
        self.flag(
            node,
            f"`{source(node)}` is an attribute of vLLM's removed `{OLD_CLASS}`; {what}.",
            fix="Keep your own reference to the module you pass as `shared_experts=`, "
            "or use the layer's public API.",
        )


def _plain(node: cst.Attribute) -> bool:
    """``x.attr`` with nothing between the dot and the name, so that the rule's triggers
    (``._shared_experts``) are exact."""
    whitespace = node.dot.whitespace_after
    return isinstance(whitespace, cst.SimpleWhitespace) and not whitespace.value


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
