"""shared-fused-moe-registry: ``SharedFusedMoE`` as a registry key, by name or by ``register_oot``."""

from __future__ import annotations

import libcst as cst

from moe_migrate.codemod.rule import Flagged, Unchanged
from moe_migrate.rules._uses import ReportsUses, Use, callee, string_value
from moe_migrate.rules._vllm import NEW_CLASS, OLD_CLASS

_COLLECTIONS = (cst.List, cst.Tuple, cst.Set)


class SharedFusedMoeRegistry(ReportsUses):
    """Flag replacements registered for `SharedFusedMoE` by name, or with `register_oot`.

    Why: out-of-tree plugins swap vLLM's layers for their own by name:
    `CustomOp.register_oot(name="SharedFusedMoE")`, `{"SharedFusedMoE": MyLayer}` tables, lists
    of layer names, `@SharedFusedMoE.register_oot`. vLLM never builds a `SharedFusedMoE` once
    the class is gone, so such a replacement is silently never used; renamed to "FusedMoE",
    it would silently take the place of whatever is registered for "FusedMoE", which now
    builds every MoE layer, with or without shared experts.

    Fix safety: report only. Strings are never rewritten; `@SharedFusedMoE.register_oot` is left
    as it was with the name's import and all its uses. A set of names that also holds
    "FusedMoE" (for telling MoE layers by name) already covers every MoE layer, so its
    "SharedFusedMoE" is only a dead entry and is not reported; a list or tuple may pair its
    names with replacements (`zip(NAMES, IMPLS)`) and is. Comparisons of a class name with a tuple
    of names belong to `moe-class-name-check`; `__all__` lists and log text are left alone.
    """

    ID = "shared-fused-moe-registry"
    EXAMPLES = (
        Flagged(
            "from vllm.model_executor.custom_op import CustomOp\n\n\n"
            '@CustomOp.register_oot(name="SharedFusedMoE")\n'
            "class TTSharedFusedMoE(TTFusedMoE):\n    pass\n",
            lines=(4,),
            note="register_oot by name",
        ),
        Flagged(
            "REGISTERED_ASCEND_OPS = {\n"
            '    "FusedMoE": AscendFusedMoE,\n'
            '    "SharedFusedMoE": AscendSharedFusedMoE,\n'
            "}\n",
            lines=(3,),
            note="a dict key",
        ),
        Flagged(
            "from vllm.model_executor.layers.fused_moe import SharedFusedMoE\n\n\n"
            "@SharedFusedMoE.register_oot\n"
            "class NPUSharedFusedMoE(NPUFusedMoE):\n    pass\n",
            lines=(4,),
            note="@SharedFusedMoE.register_oot",
        ),
        Unchanged(
            'if module.__class__.__name__ in ("FusedMoE", "SharedFusedMoE"):\n    pass\n',
            "a class-name check (moe-class-name-check's)",
        ),
        Unchanged(
            'logger.info("SharedFusedMoE", extra=x)\n__all__ = ["SharedFusedMoE"]\n'
            '__all__.extend(["SharedFusedMoE"])\n',
            "log text, an export list",
        ),
        Unchanged(
            '_MOE_CLASS_NAMES = {"FusedMoE", "SharedFusedMoE", "RoutedExperts"}\n',
            "names that also hold FusedMoE: the entry is dead, not a silent miss",
        ),
        Flagged(
            'NAMES = ["FusedMoE", "SharedFusedMoE"]\nIMPLS = [NPUFusedMoE, NPUSharedFusedMoE]\n'
            "for name, impl in zip(NAMES, IMPLS):\n    CustomOp.register_oot(name=name)(impl)\n",
            lines=(1,),
            note="a list of names, paired with replacements",
        ),
    )

    def visit_Module(self, node: cst.Module) -> None:
        super().visit_Module(node)
        self._skip: set[int] = set()
        self._exports = 0  # inside the value of an `__all__` assignment

    def describe(self, use: Use) -> tuple[str, str]:
        return (
            f"`@{OLD_CLASS}.register_oot` registers a replacement for vLLM's removed class. vLLM "
            f"no longer builds a `{OLD_CLASS}`, so it is never used; renamed to "
            f"`{NEW_CLASS}.register_oot`, it would replace every MoE layer.",
            _FIX,
        )

    def _report(self, node: cst.BaseExpression | None, listed: bool = False) -> None:
        if node is None or self._exports or id(node) in self._skip or string_value(node) != OLD_CLASS:
            return
        self._skip.add(id(node))
        what = (
            f'This lists "{OLD_CLASS}" among layer names. vLLM no longer creates a layer by that '
            "name, so whatever is done for it here (a replacement registered under it, a check by "
            "name) silently never happens"
            if listed
            else f'This registers a layer under the name "{OLD_CLASS}". vLLM no longer creates a '
            "layer by that name, so the replacement is silently never used"
        )
        self.flag(
            node,
            f'{what}; renamed to "{NEW_CLASS}", it would silently take the place of whatever is '
            f'done for "{NEW_CLASS}", which now builds every MoE layer.',
            fix=_LIST_FIX if listed else _FIX,
        )

    def visit_Call(self, node: cst.Call) -> None:
        if callee(node) in ("__all__.append", "__all__.extend"):
            self._skip.update(id(arg.value) for arg in node.args)
        elif "register" in callee(node).rpartition(".")[2]:
            for arg in node.args:
                self._report(arg.value)

    def visit_DictElement(self, node: cst.DictElement) -> None:
        self._report(node.key)

    def visit_SubscriptElement(self, node: cst.SubscriptElement) -> None:
        if isinstance(node.slice, cst.Index):
            self._report(node.slice.value)

    # Nothing in the value of `__all__` (`Base.__all__ + [...]` too) is a registry.
    def visit_Assign(self, node: cst.Assign) -> None:
        self._exports += any(isinstance(t.target, cst.Name) and t.target.value == "__all__" for t in node.targets)

    def leave_Assign(self, original_node: cst.Assign) -> None:
        self._exports -= any(
            isinstance(t.target, cst.Name) and t.target.value == "__all__" for t in original_node.targets
        )

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        self._exports += isinstance(node.target, cst.Name) and node.target.value == "__all__"

    def leave_AugAssign(self, original_node: cst.AugAssign) -> None:
        self._exports -= isinstance(original_node.target, cst.Name) and original_node.target.value == "__all__"

    def visit_Comparison(self, node: cst.Comparison) -> None:
        # `name in ("FusedMoE", "SharedFusedMoE")` is a class-name check, not a registry.
        self._skip.update(id(c.comparator) for c in node.comparisons)
        self._skip.add(id(node.left))

    def visit_List(self, node: cst.List) -> None:
        self._elements(node)

    def visit_Tuple(self, node: cst.Tuple) -> None:
        self._elements(node)

    def visit_Set(self, node: cst.Set) -> None:
        self._elements(node)

    def _elements(self, node: cst.List | cst.Tuple | cst.Set) -> None:
        # A set of names that also holds "FusedMoE" is for telling MoE layers by name: it covers
        # every one, the other entry is only dead. (A list may pair its names with classes.)
        names = {string_value(element.value) for element in node.elements}
        if id(node) not in self._skip and not (isinstance(node, cst.Set) and NEW_CLASS in names):
            for element in node.elements:
                self._report(element.value, listed=True)


_FIX = (
    f'Fold this replacement into your replacement for "{NEW_CLASS}" (register one if there is '
    f"none): `{NEW_CLASS}` now also receives `shared_experts=`, so handle layers with and without "
    "shared experts. Then remove this registration."
)
_LIST_FIX = (
    f'Drop "{OLD_CLASS}" from the list, with whatever is paired with it (a replacement class '
    f'registered under it); make what is done for "{NEW_CLASS}" handle layers with and without '
    "shared experts."
)
