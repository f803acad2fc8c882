"""shared-fused-moe-subclass: a class deriving from ``SharedFusedMoE`` that a rename would break."""

from __future__ import annotations

from moe_migrate.codemod.rule import Flagged, Unchanged
from moe_migrate.rules._uses import ReportsUses, Use
from moe_migrate.rules._vllm import NEW_CLASS, OLD_CLASS

_IMPORT = "from vllm.model_executor.layers.fused_moe import FusedMoE, SharedFusedMoE\n"


class SharedFusedMoeSubclass(ReportsUses):
    """Flag subclasses of `SharedFusedMoE` whose meaning a rename to `FusedMoE` would change.

    Why: a class with a second base that already derives from `FusedMoE` (a platform's MoE
    layer, or `FusedMoE` itself) can no longer be created once its `SharedFusedMoE` base
    becomes `FusedMoE` (inconsistent MRO, or a duplicate base). A `forward` override usually
    relies on the old `(shared_out, fused_out)` return, and an `__init__` override on the old
    constructor (`shared_experts=`, `gate=`, `use_overlapped=`). The finding says which apply.

    Fix safety: report only. The class, its import and every other use of the name in the file
    are left as they were. A subclass whose only other bases are plain mixins defined in the
    same file, and which overrides neither `forward` nor `__init__` (vLLM's own `AriaFusedMoE`
    overrides `weight_loader`), is renamed by `shared-fused-moe-reference` instead; so is one
    whose overrides only pass calls on (`forward` returning `super().forward(...)`, `__init__`
    handing `**kwargs` to `super().__init__` without taking `shared_experts` or
    `use_overlapped` itself).
    """

    ID = "shared-fused-moe-subclass"
    EXAMPLES = (
        Flagged(
            "from vllm.model_executor.layers.fused_moe import SharedFusedMoE\n"
            "from vllm_ascend.ops.fused_moe import AscendFusedMoE\n\n\n"
            "class AscendSharedFusedMoE(SharedFusedMoE, AscendFusedMoE):\n"
            "    pass\n",
            lines=(5,),
            note="a second base that may already derive from FusedMoE",
        ),
        Flagged(
            _IMPORT + "\n\nclass Both(SharedFusedMoE, FusedMoE):\n    pass\n",
            lines=(4,),
            note="FusedMoE would be a base twice",
        ),
        Flagged(
            _IMPORT + "\n\nclass NPUSharedFusedMoE(SharedFusedMoE):\n"
            "    def forward(self, hidden_states, router_logits):\n"
            "        shared_out, fused_out = super().forward(hidden_states, router_logits)\n"
            "        return shared_out, fused_out * 2\n",
            lines=(4,),
            note="forward overridden",
        ),
        Unchanged(
            _IMPORT + "\n\nclass AriaFusedMoE(SharedFusedMoE):\n"
            "    def weight_loader(self, param, loaded_weight, shard_id):\n"
            "        param.data.copy_(loaded_weight)\n",
            "a subclass the rename keeps meaning the same",
        ),
        Flagged(
            _IMPORT + "\n\nclass NPUMoE(SharedFusedMoE):\n"
            "    def __init__(self, shared_experts, use_overlapped=True, **kwargs):\n"
            "        super().__init__(shared_experts=shared_experts, use_overlapped=use_overlapped, **kwargs)\n",
            lines=(4,),
            note="__init__ taking the old class's own arguments",
        ),
        Unchanged(
            _IMPORT + "\n\nclass HunyuanMoE(SharedFusedMoE):\n"
            "    def __init__(self, *, prefix='', **kwargs):\n"
            "        super().__init__(prefix=prefix, **kwargs)\n"
            "        self._prefix = prefix\n\n"
            "    def forward(self, hidden_states, router_logits):\n"
            "        return super().forward(hidden_states, router_logits)\n",
            "overrides that only pass calls on: a safe rename",
        ),
        Unchanged(
            _IMPORT + "\n\nclass _CaptureMixin:\n    pass\n\n\n"
            "class CaptureMoE(_CaptureMixin, SharedFusedMoE):\n    pass\n",
            "a plain mixin defined in the same file",
        ),
        Unchanged(
            "from vllm_ascend.ops import AscendSharedFusedMoE\n\n\n"
            "class Mine(AscendSharedFusedMoE):\n"
            "    def forward(self, x):\n        return x\n",
            "a name that merely contains it",
        ),
    )

    def describe(self, use: Use) -> tuple[str, str]:
        name, *reasons = use.detail
        why, fix = [], []
        for reason in reasons:
            kind, _, base = reason.partition(":")
            if kind == "duplicate":
                why.append(f"`{base}` would be its base twice, so Python could no longer create it")
                fix.append(f"drop `{OLD_CLASS}` from its bases")
            elif kind == "base":
                why.append(
                    f"its other base `{base}` may already derive from `{NEW_CLASS}` (a platform's "
                    "MoE layer does); the renamed bases would then have no consistent MRO and "
                    "the class could no longer be created"
                )
                fix.append(f"derive from `{base}` alone (or from `{NEW_CLASS}`)")
            elif kind == "forward":
                why.append(
                    f"its `forward` overrides `{OLD_CLASS}.forward`, which returned "
                    f"`(shared_out, fused_out)`; `{NEW_CLASS}.forward` returns one tensor with "
                    "the shared experts already added"
                )
                fix.append(f"make `forward` work with the one tensor `{NEW_CLASS}` returns")
            else:
                why.append(
                    f"its `__init__` overrides the old constructor (`shared_experts=`, `gate=`, "
                    f"`use_overlapped=`), which `{NEW_CLASS}.__init__` does not mirror"
                )
                fix.append(f"pass `shared_experts=` on to `{NEW_CLASS}.__init__` and drop what only the old class took")
        advice = f"{'; '.join(fix)}; then import `{NEW_CLASS}` instead of `{OLD_CLASS}`."
        return (
            f"`{name}` derives from vLLM's removed `{OLD_CLASS}`, and renaming the base is not "
            f"enough: {'; '.join(why)}. The class and every use of `{OLD_CLASS}` in this file "
            "were left as they were.",
            advice[:1].upper() + advice[1:],
        )
