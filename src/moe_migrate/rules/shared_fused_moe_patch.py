"""shared-fused-moe-patch: monkeypatches, stubs and bypasses of ``SharedFusedMoE``."""

from __future__ import annotations

import libcst as cst
from libcst.helpers import get_full_name_for_node

from moe_migrate.codemod.rule import Flagged, Unchanged
from moe_migrate.rules._uses import ReportsUses, Use, callee, names_removed, source, string_value
from moe_migrate.rules._vllm import NEW_CLASS, OLD_CLASS, PACKAGE

_IMPORT = "from vllm.model_executor.layers.fused_moe import SharedFusedMoE\n"
_SETTERS = ("setattr", "delattr", "patch.object", "patch.multiple")


class SharedFusedMoePatch(ReportsUses):
    """Flag code that patches, stubs or bypasses `SharedFusedMoE` instead of just using it.

    Why: plugins patch vLLM in place: `SharedFusedMoE.forward = patched`, `setattr`/`del` on
    the class, `<module>.SharedFusedMoE = Mine`, `patch.object(SharedFusedMoE, ...)`,
    `patch("vllm...shared_fused_moe.SharedFusedMoE.forward")`, `sys.modules` stubs of the
    deleted module, `super(SharedFusedMoE, self)` and `SharedFusedMoE.forward(self, ...)`.
    Renamed, each would patch or bypass every `FusedMoE` layer, not only those with shared
    experts; left alone, each fails or silently does nothing once the class is gone.

    Fix safety: report only. The construct, the import of the name and every other use of it
    in the file are left as they were (a file that patches or stubs the class by its dotted
    name keeps all its imports of the class, so the stub and the import still agree).
    """

    ID = "shared-fused-moe-patch"
    EXAMPLES = (
        Flagged(
            _IMPORT + "\n\ndef patched_forward(self, hidden_states, router_logits):\n"
            "    return hidden_states\n\n\nSharedFusedMoE.forward = patched_forward\n",
            lines=(8,),
            note="an attribute of the class replaced",
        ),
        Flagged(
            "import vllm.model_executor.layers.fused_moe as fused_moe\n\n"
            "fused_moe.SharedFusedMoE = AscendSharedFusedMoE\n",
            lines=(3,),
            note="the class replaced on its module",
        ),
        Flagged(
            "import sys\nfrom unittest.mock import MagicMock, patch\n\n"
            'sys.modules["vllm.model_executor.layers.fused_moe.shared_fused_moe"] = MagicMock()\n'
            '@patch("vllm.model_executor.layers.fused_moe.SharedFusedMoE.forward")\n'
            "def test_forward(mock_forward):\n    pass\n",
            lines=(4, 5),
            note="a stub of the deleted module, a patch target by name",
        ),
        Flagged(
            _IMPORT + "\n\nclass Mine(AscendFusedMoE):\n"
            "    def forward(self, hidden_states, router_logits):\n"
            "        return SharedFusedMoE.forward(self, hidden_states, router_logits)\n",
            lines=(6,),
            note="the removed class's own forward, called unbound",
        ),
        Flagged(
            _IMPORT + "\n\n@register_patch('EPLBSharedFusedMoE', SharedFusedMoE)\n"
            "class EPLBPatch(VLLMPatch):\n"
            "    _attr_names_to_apply = ['__init__']\n",
            lines=(4,),
            note="the class given to a patch registration",
        ),
        Unchanged(
            _IMPORT + "mapping = SharedFusedMoE.make_expert_params_mapping(model)\n",
            "a classmethod FusedMoE has too: a safe rename",
        ),
        Unchanged(
            "from vllm_ascend.ops.fused_moe import SharedFusedMoE\n\n"
            "SharedFusedMoE.forward = lambda self, x: x\n",
            "a plugin's own class of that name",
        ),
        Unchanged(
            'logger.info("vllm.model_executor.layers.fused_moe.shared_fused_moe is gone, using %s", x)\n',
            "the module's name inside log text",
        ),
    )

    def visit_Module(self, node: cst.Module) -> None:
        super().visit_Module(node)
        self._in_concatenation = 0
        #: The calls, subscripts and ``del`` statements around the node being read, innermost
        #: last: what a dotted name does there (`_what_it_does`).
        self._around: list[cst.CSTNode] = []

    def describe(self, use: Use) -> tuple[str, str]:
        attr = use.detail[0] if use.detail else ""
        every = (
            f"renamed, it would apply to every `{NEW_CLASS}` layer, not only those with shared "
            f"experts; left as it is, it fails once vLLM no longer has `{OLD_CLASS}`"
        )
        patch_fused = (
            f"If the change is still needed, patch `{NEW_CLASS}.{attr or 'forward'}` deliberately "
            "and branch on whether the layer has shared experts; otherwise delete it."
        )
        if use.kind in ("assign", "delete"):
            verb = "replaces" if use.kind == "assign" else "deletes"
            return f"This {verb} `{OLD_CLASS}.{attr}`: {every}.", patch_fused
        if use.kind in ("setattr", "patch-object"):
            return f"`{source_name(use.node)}` patches `{OLD_CLASS}` itself: {every}.", patch_fused
        if use.kind == "patch-call":
            return (
                f"`{attr}(...)` is given `{OLD_CLASS}` itself, to patch or register it: {every}.",
                f"If it is still needed, apply it to `{NEW_CLASS}` deliberately and branch on "
                "whether the layer has shared experts; otherwise delete it.",
            )
        if use.kind == "replace":
            return _replaced_message()
        if use.kind == "super":
            return (
                f"`super({OLD_CLASS}, self)` skips `{OLD_CLASS}`'s own methods to reach "
                f"`{NEW_CLASS}`'s; renamed to `super({NEW_CLASS}, self)` it would skip "
                f"`{NEW_CLASS}`'s as well.",
                f"Derive from `{NEW_CLASS}` and call `super()`.",
            )
        return (
            f"`{OLD_CLASS}.{attr}` is the removed class's own `{attr}`, which differs from "
            f"`{NEW_CLASS}.{attr}` (its forward returned `(shared_out, fused_out)`, "
            f"`{NEW_CLASS}`'s returns one tensor with the shared experts added).",
            f"Call `{NEW_CLASS}.{attr}` (or `super().{attr}`) and adapt to what it returns.",
        )

    # -- patches by name, which no binding can see -----------------------------------------------

    def visit_ConcatenatedString(self, node: cst.ConcatenatedString) -> None:
        self._dotted(node)
        self._in_concatenation += 1

    def leave_ConcatenatedString(self, original_node: cst.ConcatenatedString) -> None:
        self._in_concatenation -= 1

    def visit_SimpleString(self, node: cst.SimpleString) -> None:
        if not self._in_concatenation:
            self._dotted(node)

    def _dotted(self, node: cst.BaseExpression) -> None:
        text = string_value(node)
        if text is None or not names_removed(text):
            return
        what = _what_it_does(self._around)
        self.flag(
            node,
            f'"{text}" names vLLM\'s removed `{OLD_CLASS}` or its deleted module. {what}',
            fix=f"Name `{PACKAGE}.{NEW_CLASS}` (the package still exists) where the behaviour is "
            "still needed, handling layers with and without shared experts; remove what only "
            "served the deleted module.",
        )

    # The nodes around a dotted string, read only when one is found (`_what_it_does`).
    def visit_Del(self, node: cst.Del) -> None:
        self._around.append(node)

    def leave_Del(self, original_node: cst.Del) -> None:
        self._around.pop()

    def visit_Subscript(self, node: cst.Subscript) -> None:
        self._around.append(node)

    def leave_Subscript(self, original_node: cst.Subscript) -> None:
        self._around.pop()

    def visit_Call(self, node: cst.Call) -> None:
        self._around.append(node)
        # setattr(fused_moe, "SharedFusedMoE", Mine), patch.object(module, "SharedFusedMoE", ...)
        if len(node.args) > 1 and callee(node).endswith(_SETTERS):
            if string_value(node.args[1].value) == OLD_CLASS:
                message, fix = _replaced_message(source(node.args[0].value).strip())
                self.flag(node, message, fix=fix)

    def leave_Call(self, original_node: cst.Call) -> None:
        self._around.pop()


def _what_it_does(around: list[cst.CSTNode]) -> str:
    """What breaks for a dotted name of the deleted module, from the innermost call,
    subscript or ``del`` around it."""
    inner = around[-1] if around else None
    if isinstance(inner, cst.Subscript) and get_full_name_for_node(inner.value) == "sys.modules":
        if len(around) > 1 and isinstance(around[-2], cst.Del):
            return "Deleting it from `sys.modules` raises `KeyError` once the module is gone."
        return _STUB
    if isinstance(inner, cst.Call):
        name = callee(inner)
        # `monkeypatch.setitem(sys.modules, "...", stub)`: a stub, whatever the call is called.
        if name.endswith("patch.dict") or (inner.args and get_full_name_for_node(inner.args[0].value) == "sys.modules"):
            return _STUB
        if "patch" in name:
            return "A patch with this target fails after the upgrade."
    return (
        "After the upgrade nothing exists under this name: importing it fails (and a fallback "
        "for that case is what runs), and patching it fails."
    )


_STUB = "A `sys.modules` stub of it hides that the real import is gone."


def source_name(call: cst.CSTNode) -> str:
    return f"{callee(call)}(...)" if isinstance(call, cst.Call) else OLD_CLASS


def _replaced_message(owner: str = "") -> tuple[str, str]:
    on = f"on `{owner}`" if owner else "on a vLLM module"
    return (
        f"This replaces `{OLD_CLASS}` {on}. Once the class is gone vLLM no longer builds or "
        f"looks up a `{OLD_CLASS}` (and a module migrated off it no longer binds the name), so "
        f"the replacement is never used or fails; renamed, it would replace `{NEW_CLASS}` for "
        "every MoE layer.",
        f"Replace or register your layer for `{NEW_CLASS}` (it now receives `shared_experts=`) "
        "so that it handles layers with and without shared experts.",
    )
