"""vllm-remove-shared-fused-moe: in vLLM's own tree, remove the class, as vLLM did."""

from __future__ import annotations

from typing import Mapping

import libcst as cst
from libcst.helpers import get_full_name_for_node

from moe_migrate.codemod.context import FileContext
from moe_migrate.codemod.outcomes import FileOutcome
from moe_migrate.codemod.rule import Rewrite, Rule, Unchanged
from moe_migrate.codemod.sequence import drop_at
from moe_migrate.codemod.tree import Tree
from moe_migrate.rules._vllm import OLD_CLASS, OLD_MODULES, PACKAGE

UTILS = "vllm.utils"
HELPER = "is_moe_layer"

_HELPER_SOURCE = '''

def is_moe_layer(module: {annotation}) -> bool:
    """Whether ``module`` is vLLM's MoE layer: ``FusedMoE`` or a subclass of it.

    Compares class names along the MRO rather than importing ``FusedMoE``,
    which would be a circular import from here.
    """
    return any(cls.__name__ == "FusedMoE" for cls in type(module).__mro__)
'''

_INIT = (
    "from vllm.model_executor.layers.fused_moe.layer import FusedMoE\n"
    "from vllm.model_executor.layers.fused_moe.shared_fused_moe import SharedFusedMoE\n"
    "\n"
    "__all__ = [\n"
    '    "FusedMoE",\n'
    '    "SharedFusedMoE",\n'
    "]\n"
)
_INIT_AFTER = (
    "from vllm.model_executor.layers.fused_moe.layer import FusedMoE\n"
    "\n"
    "__all__ = [\n"
    '    "FusedMoE",\n'
    "]\n"
)


class VllmRemoveSharedFusedMoe(Rule):
    """In vLLM's own source, remove `SharedFusedMoE` the way vLLM did.

    Why: this is the change vLLM itself made (PR #35782), beyond the renames: the module
    `vllm/model_executor/layers/fused_moe/shared_fused_moe.py` is deleted, the package
    `vllm.model_executor.layers.fused_moe` stops importing and exporting the class, and
    `vllm/utils/__init__.py` gains `is_moe_layer(module) -> bool`, which the class-name
    checks now call. It applies only when the tree contains that module, i.e. when the tree
    is vLLM (or a fork of it), never to a plugin.

    Fix safety: safe together with the rename rules, which rewrite every other import of the
    class (inside the package they import `FusedMoE` from its own module, so the package
    never imports itself). `is_moe_layer` compares the names of the classes in the module's
    MRO with "FusedMoE", imports nothing from the MoE code, and returns a real bool; it is
    added only if `vllm.utils` does not define it yet. Whether the class was safe to remove
    is checked by `shared-fused-moe-not-trivial`.
    """

    ID = "vllm-remove-shared-fused-moe"
    WHOLE_FILE = True
    EXAMPLES = (
        Rewrite(_INIT, _INIT_AFTER, "the package stops exporting it", module=PACKAGE, is_package=True),
        Rewrite(
            "from .shared_fused_moe import SharedFusedMoE\n__all__ = ['SharedFusedMoE', 'X']\n",
            "__all__ = ['X']\n",
            "relative import, one-line __all__",
            module=PACKAGE,
            is_package=True,
        ),
        Unchanged(_INIT, "any module but the package itself"),
    )

    @classmethod
    def applies_to(cls, file: FileContext) -> bool:
        return file.module == PACKAGE and file.is_package

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        module = get_full_name_for_node(node.module) if node.module else None
        if self.file.resolve_relative(len(node.relative), module) not in OLD_MODULES:
            return
        if isinstance(node.names, cst.ImportStar):
            return
        drop = {i for i, a in enumerate(node.names) if get_full_name_for_node(a.name) == OLD_CLASS}
        if len(drop) == len(node.names):
            self.remove(node)
        elif drop:
            self.replace(node, lambda updated: updated.with_changes(names=drop_at(updated.names, drop)))

    def visit_Assign(self, node: cst.Assign) -> None:
        targets = [get_full_name_for_node(t.target) for t in node.targets]
        if targets != ["__all__"] or not isinstance(node.value, (cst.List, cst.Tuple)):
            return
        elements = node.value.elements
        drop = {
            i
            for i, e in enumerate(elements)
            if isinstance(e.value, cst.SimpleString) and e.value.evaluated_value == OLD_CLASS
        }
        if drop:
            self.replace(
                node.value,
                lambda updated: updated.with_changes(elements=drop_at(updated.elements, drop)),
            )

    @classmethod
    def finish(cls, tree: Tree) -> Mapping[str, FileOutcome]:
        """Delete the class's module and give ``vllm.utils`` its ``is_moe_layer``."""
        path = next((tree.path_of(m) for m in OLD_MODULES if tree.path_of(m)), None)
        if path is None:
            return {}  # not vLLM's own tree
        updates: dict[str, FileOutcome] = {path: tree.delete(path, cls.ID)}
        utils = tree.path_of(UTILS)
        if utils is not None:
            updates[utils] = tree.rewrite(utils, [AddIsMoeLayer])
        return updates


class AddIsMoeLayer(Rule):
    """Define `is_moe_layer` at the end of `vllm.utils` unless it is defined already.

    Why: the helper that replaces hard-coded class-name checks. Fix safety: safe; appended
    only once.
    """

    ID = VllmRemoveSharedFusedMoe.ID
    WHOLE_FILE = True
    EXAMPLES = (
        Rewrite(
            "import torch\n\nMASK = 1\n",
            "import torch\n\nMASK = 1\n" + _HELPER_SOURCE.format(annotation="torch.nn.Module"),
            module=UTILS,
            is_package=True,
        ),
        Unchanged("def is_moe_layer(module):\n    return True\n", module=UTILS, is_package=True),
    )

    @classmethod
    def applies_to(cls, file: FileContext) -> bool:
        return file.module == UTILS

    def visit_Module(self, node: cst.Module) -> None:
        defined = any(
            isinstance(s, cst.FunctionDef) and s.name.value == HELPER for s in node.body
        )
        if defined:
            return
        has_torch = any(
            isinstance(line, cst.SimpleStatementLine)
            and any(
                isinstance(s, cst.Import)
                and any(get_full_name_for_node(a.name) == "torch" and a.asname is None for a in s.names)
                for s in line.body
            )
            for line in node.body
        )
        source = _HELPER_SOURCE.format(annotation="torch.nn.Module" if has_torch else "object")
        helper = cst.parse_module(source).body
        # Two blank lines above a top-level def, as the rest of the module has.
        helper = [helper[0].with_changes(leading_lines=[cst.EmptyLine(), cst.EmptyLine()]), *helper[1:]]
        self.replace(node, lambda updated: updated.with_changes(body=[*updated.body, *helper]))
