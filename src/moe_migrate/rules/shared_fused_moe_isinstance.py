"""shared-fused-moe-isinstance: ``isinstance(x, SharedFusedMoE)`` used to tell layers apart."""

from __future__ import annotations

from moe_migrate.codemod.rule import Flagged, Unchanged
from moe_migrate.rules._uses import ReportsUses, Use
from moe_migrate.rules._vllm import NEW_CLASS, OLD_CLASS

_IMPORT = "from vllm.model_executor.layers.fused_moe import FusedMoE, SharedFusedMoE\n"


class SharedFusedMoeIsinstance(ReportsUses):
    """Flag `isinstance(x, SharedFusedMoE)` checks that tell MoE layers apart.

    Why: before the removal the check was true only for layers with shared experts. Once the
    class is gone every MoE layer is a `FusedMoE`, so the renamed check is true for all of them.
    That matters where the answer is branched on (`if`, `while`, a conditional expression, a
    comprehension filter), kept in a variable, or where the same function also tests for
    `FusedMoE`.

    Fix safety: report only; the check, the name's import and every use of the name in the
    file are left as they were. A check that only asks "is this an MoE layer at all", with
    `FusedMoE` in the same tuple, or an `isinstance` that is not branched on (an `assert`, a
    returned value), is renamed by `shared-fused-moe-reference` instead.
    """

    ID = "shared-fused-moe-isinstance"
    EXAMPLES = (
        Flagged(
            _IMPORT + "\n\ndef shared_output(layer, x):\n"
            "    if isinstance(layer, SharedFusedMoE):\n"
            "        return layer.shared_experts(x)\n"
            "    return None\n",
            lines=(5,),
            note="branched on",
        ),
        Flagged(
            _IMPORT + "\n\ndef count(model):\n"
            "    shared = [m for m in model.modules() if isinstance(m, SharedFusedMoE)]\n"
            "    plain = [m for m in model.modules() if isinstance(m, FusedMoE)]\n"
            "    return len(shared), len(plain)\n",
            lines=(5,),
            note="next to a test for FusedMoE",
        ),
        Flagged(
            _IMPORT + "\n\ndef route(a, b):\n"
            "    if isinstance(a, FusedMoE) or isinstance(b, SharedFusedMoE):\n"
            "        return a\n"
            "    return b\n",
            lines=(5,),
            note="or-ed with a FusedMoE test of something else",
        ),
        Unchanged(
            _IMPORT + "\n\ndef is_moe(module):\n"
            "    return isinstance(module, (FusedMoE, SharedFusedMoE))\n",
            "any MoE layer: a safe rename",
        ),
        Unchanged(
            _IMPORT + "\n\ndef is_moe(module):\n"
            "    return isinstance(module, FusedMoE) or isinstance(module, SharedFusedMoE)\n",
            "the same, or-ed",
        ),
        Unchanged(
            _IMPORT + "\n\ndef check(layer):\n    assert isinstance(layer, SharedFusedMoE)\n",
            "not branched on: a safe rename",
        ),
    )

    def describe(self, use: Use) -> tuple[str, str]:
        where = (
            "its answer decides what happens here"
            if use.kind == "branch"
            else f"this function also tests for `{NEW_CLASS}`"
        )
        return (
            f"This tests for `{OLD_CLASS}` to tell layers with shared experts apart, and {where}. "
            f"Once the class is gone every MoE layer is a `{NEW_CLASS}`, so renamed it would be "
            "true for all of them; the check was left as it was.",
            "Test what the code needs instead, for example whether the layer was built with "
            f"`shared_experts=` (keep a reference to that module), then import `{NEW_CLASS}`.",
        )
