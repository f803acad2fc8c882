"""shared-fused-moe-import-fallback: ``try: import SharedFusedMoE / except: = FusedMoE`` goes."""

from __future__ import annotations

import libcst as cst

from moe_migrate.codemod.rule import Flagged, Rewrite, Unchanged
from moe_migrate.rules._uses import ReportsUses, source
from moe_migrate.rules._vllm import NEW_CLASS, OLD_CLASS, PACKAGE

_FUSED = "from vllm.model_executor.layers.fused_moe import FusedMoE\n"
_TRY = "try:\n    from vllm.model_executor.layers.fused_moe import SharedFusedMoE\n"
_USE = "\nexperts = SharedFusedMoE(shared_experts=mlp, num_experts=8)\n"
_USE_AFTER = "\nexperts = FusedMoE(shared_experts=mlp, num_experts=8)\n"


class SharedFusedMoeImportFallback(ReportsUses):
    """Drop `try`/`except ImportError` fallbacks to `FusedMoE`; flag every other fallback.

    Why: plugins that support several vLLM versions import `SharedFusedMoE` in a `try` and
    fall back when it is missing. After the upgrade the import always fails, so the fallback
    is what runs. Where the fallback is vLLM's `FusedMoE` itself (`SharedFusedMoE = FusedMoE`,
    `from ... import FusedMoE as SharedFusedMoE`), the whole block is the same as importing
    `FusedMoE`. Any other fallback (`= None`, `pass`, a second import path, a feature flag, an
    import on one side of a version check) drives behaviour that a human must decide.

    Fix safety: safe for the first shape: the block becomes its own `try` body (the import,
    rewritten by `shared-fused-moe-import`, or nothing when `FusedMoE` is already imported)
    and uses are renamed by `shared-fused-moe-reference`. Every other block is left exactly as
    it was, with the name's import and all its uses, and reported.
    """

    ID = "shared-fused-moe-import-fallback"
    EXAMPLES = (
        Rewrite(
            _FUSED + _TRY + "except ImportError:\n    SharedFusedMoE = FusedMoE\n" + _USE,
            _FUSED + _USE_AFTER,
            "the fallback is FusedMoE: the block goes",
        ),
        Rewrite(
            _TRY + "except ImportError:\n"
            "    from vllm.model_executor.layers.fused_moe import FusedMoE as SharedFusedMoE\n" + _USE,
            _FUSED + _USE_AFTER,
            "the fallback imports FusedMoE under the old name",
        ),
        Flagged(
            _TRY + "except ImportError:\n    SharedFusedMoE = None\n"
            "\nHAS_SHARED = SharedFusedMoE is not None\n",
            lines=(1,),
            note="a None fallback: the feature silently turns off",
        ),
        Flagged(
            _TRY + "except ImportError:\n"
            "    from vllm.model_executor.layers.shared_fused_moe import SharedFusedMoE\n",
            lines=(1,),
            note="a second import path, removed too",
        ),
        Flagged(
            "if vllm_version >= (0, 11):\n"
            "    from vllm.model_executor.layers.fused_moe import SharedFusedMoE\n"
            "else:\n    SharedFusedMoE = None\n",
            lines=(1,),
            note="an import gated on a version check",
        ),
        Unchanged(
            "try:\n    from vllm_ascend.ops.fused_moe import SharedFusedMoE\n"
            "except ImportError:\n    SharedFusedMoE = None\n",
            "a plugin's own class of that name",
        ),
        Unchanged(
            "try:\n    from vllm.model_executor.layers.fused_moe import FusedMoE\n"
            "except ImportError:\n    FusedMoE = None\n",
            "a fallback for FusedMoE itself",
        ),
    )

    def visit_Module(self, node: cst.Module) -> None:
        super().visit_Module(node)
        for fallback in self.uses.fallbacks:
            if fallback.safe and self.analysis.held:
                continue  # the file keeps the old name for another finding: so does this block
            if fallback.safe:
                self.replace(fallback.block, _unwrap)
            else:
                self.flag(
                    fallback.block,
                    f"`{OLD_CLASS}` is imported here with a fallback that is not vLLM's "
                    f"`{NEW_CLASS}` ({_what_it_does(fallback.block)}). After the upgrade the import "
                    "always fails, so the fallback decides what this code does; the block, the "
                    "import and every use of the name were left as they were.",
                    fix=f"Import `{NEW_CLASS}` from `{PACKAGE}` unconditionally, and rewrite the "
                    f"code that depends on the fallback (a `{OLD_CLASS} is None` check, a feature "
                    f"flag) for a vLLM where every MoE layer is a `{NEW_CLASS}` that takes "
                    "`shared_experts=`.",
                )


def _unwrap(updated: cst.CSTNode) -> cst.FlattenSentinel[cst.BaseStatement]:
    """The ``try`` statement replaced by its body, which keeps the block's leading comments."""
    assert isinstance(updated, cst.Try)
    body = list(updated.body.body)
    if body:
        body[0] = body[0].with_changes(leading_lines=[*updated.leading_lines, *body[0].leading_lines])
    return cst.FlattenSentinel(body)


def _what_it_does(block: cst.Try | cst.If) -> str:
    """A few words on what the fallback branch does, for the message."""
    if isinstance(block, cst.If):
        return "the import is on one side of an `if`, such as a version check"
    for handler in block.handlers:
        for line in handler.body.body:
            for small in getattr(line, "body", ()):
                if isinstance(small, cst.Pass):
                    return "the `except` branch leaves the name undefined"
                if isinstance(small, (cst.Import, cst.ImportFrom)):
                    return "the `except` branch tries another import path, which vLLM removed too"
                if isinstance(small, cst.Assign):
                    return f"the `except` branch runs `{source(small).strip()}`"
    return "the `except` branch does something else"
