"""shared-fused-moe-reference: every use of vLLM's ``SharedFusedMoE`` becomes ``FusedMoE``."""

from __future__ import annotations

import re

import libcst as cst
from libcst.helpers import get_full_name_for_node

from moe_migrate.codemod.context import FileContext
from moe_migrate.codemod.imports import dotted
from moe_migrate.codemod.rule import Flagged, Rewrite, Rule, Unchanged
from moe_migrate.codemod.sequence import drop_at
from moe_migrate.rules._vllm import (
    NEW_CLASS,
    NEW_QUALNAME,
    NEW_QUALNAMES,
    OLD_CLASS,
    OLD_QUALNAMES,
    Analysis,
    Binding,
    analyse,
    attribute_head,
    is_removal_target,
)

_IMPORT = "from vllm.model_executor.layers.fused_moe import FusedMoE, SharedFusedMoE\n"
_IMPORT_AFTER = "from vllm.model_executor.layers.fused_moe import FusedMoE\n"

# "FusedMoE or SharedFusedMoE" and friends name one class once the two are one, also quoted
# alike (```FusedMoE``/``SharedFusedMoE```) or as "FusedMoE (or SharedFusedMoE)".
_JOIN = r"\s*(?:or|and|/|,|\|)\s*"
_PAIR = re.compile(
    rf"(`*)\b{NEW_CLASS}\b\1{_JOIN}\1\b{OLD_CLASS}\b\1"
    rf"|(`*)\b{OLD_CLASS}\b\2{_JOIN}\2\b{NEW_CLASS}\b\2"
    rf"|(`*)\b{NEW_CLASS}\b\3\s*\(\s*(?:or|and)\s+\3\b{OLD_CLASS}\b\3\s*\)"
)
_WORD = re.compile(rf"\b{OLD_CLASS}\b")
# What is left naming the class twice ("FusedMoE`` (or ``FusedMoE") is left as it was.
_TWICE = re.compile(rf"\b{NEW_CLASS}\b\W{{0,6}}(?:(?:or|and)\W{{1,6}})?(?:\w+:\W{{0,3}})?\b{NEW_CLASS}\b")
# A comment that is code someone switched off: left as it was written.
_CODE_LIKE = re.compile(
    rf"^\s*(?:[\w.]+\s*(?::[^=]+)?=(?!=)|from\s+[\w.]+\s+import\b|import\s+[\w.]|return\b|class\s+\w+\s*\(|def\s+\w+\s*\()"
    rf"|\b{OLD_CLASS}\s*\("
)


def rewrite_prose(text: str) -> str:
    """``text`` with vLLM's removed class named as ``FusedMoE``, staying true: a line about
    history keeps it."""
    return "".join(
        line if _HISTORY.search(line) else _WORD.sub(NEW_CLASS, _PAIR.sub(_one_name, line))
        for line in text.splitlines(keepends=True)
    )


def _one_name(pair: re.Match[str]) -> str:
    """A matched pair of names as the one class, quoted as the pair was."""
    quote = next(q for q in pair.groups() if q is not None)
    return f"{quote}{NEW_CLASS}{quote}"


def _is_commented_out_code(comment: str) -> bool:
    return bool(_CODE_LIKE.search(comment.lstrip("#")))


# Prose about the pair the removed class returned ("Handle tuple return from SharedFusedMoE"):
# said of FusedMoE, which returns one tensor, it would be false. It stays as written, next to
# the code that moe-output-tuple reports. So does history ("Wrapper for vLLM SharedFusedMoE
# (v0.16-v0.19)", "the legacy SharedFusedMoE").
_ABOUT_THE_PAIR = re.compile(r"\b(?:tuple|pair)s?\b|\bshared_out\b", re.IGNORECASE)
_HISTORY = re.compile(
    r"\bv\d+\.\d+|\d+\.\d+\s*[-\u2013]\s*v?\d+\.\d+|\bvllm\s*[<>=]=?\s*v?\d"
    r"|\b(?:legacy|older|deprecated|formerly|previously|removed)\b",
    re.IGNORECASE,
)


def _renamable(prose: str) -> bool:
    """Prose that names the removed class and stays true with ``FusedMoE`` in its place."""
    if not _WORD.search(prose) or _ABOUT_THE_PAIR.search(prose):
        return False
    renamed = rewrite_prose(prose)
    return renamed != prose and not _TWICE.search(renamed)


class SharedFusedMoeReference(Rule):
    """Name vLLM's `FusedMoE` wherever code refers to `SharedFusedMoE`.

    Why: vLLM removed `SharedFusedMoE`; `FusedMoE` is the same layer and takes
    `shared_experts=` itself. Every call, classmethod (`make_expert_params_mapping`), base
    class, annotation (also inside strings, `X | None`, `Optional[X]`, generics) and
    `isinstance` check that names the old class fails on upgrade.

    Fix safety: safe where the target's `SharedFusedMoE` was the thin subclass vLLM removed
    (forward only returning `super().forward(...)`). Names are matched by the import that
    binds them, so a project's own class called `SharedFusedMoE` is left alone. A tuple or
    union that would name `FusedMoE` twice keeps one, and so does a `{type: handler}` or
    `(type, handler)` table: its `SharedFusedMoE` row goes when both rows have the same
    handler; with different handlers the table is reported (this rule owns the finding) and
    left as it was, also when its rows are assigned one by one (`table[FusedMoE] = ...`) or
    name the classes through module aliases. Comments and docstrings are updated so they stay true ("FusedMoE or
    SharedFusedMoE" becomes "FusedMoE") in files that use the class and everywhere in vLLM's
    own tree; commented-out code, prose about the pair it returned ("tuple", "pair",
    `shared_out`) or about history (versions, "legacy"), log strings, files that define their
    own `SharedFusedMoE`, files that test whether it exists and files where a use of it is
    left for a human are left as they are. A file where another rule
    leaves a use of the class for a human is left whole: no use in it is renamed, so no name
    is left undefined.
    """

    ID = "shared-fused-moe-reference"
    EXAMPLES = (
        Rewrite(
            _IMPORT + "experts = SharedFusedMoE(shared_experts=mlp, num_experts=8)\n",
            _IMPORT_AFTER + "experts = FusedMoE(shared_experts=mlp, num_experts=8)\n",
            "a call",
        ),
        Rewrite(
            _IMPORT + "mapping = SharedFusedMoE.make_expert_params_mapping(model)\n",
            _IMPORT_AFTER + "mapping = FusedMoE.make_expert_params_mapping(model)\n",
            "a classmethod",
        ),
        Rewrite(
            _IMPORT + "def get(self) -> 'SharedFusedMoE | None':\n    return self.experts\n",
            _IMPORT_AFTER + "def get(self) -> 'FusedMoE | None':\n    return self.experts\n",
            "a string annotation",
        ),
        Rewrite(
            _IMPORT + "layers: list[SharedFusedMoE] = []\n",
            _IMPORT_AFTER + "layers: list[FusedMoE] = []\n",
            "a subscripted annotation",
        ),
        Rewrite(
            _IMPORT + "ok = isinstance(m, (FusedMoE, SharedFusedMoE))\n",
            _IMPORT_AFTER + "ok = isinstance(m, FusedMoE)\n",
            "isinstance keeps one FusedMoE",
        ),
        Rewrite(
            _IMPORT + "def is_moe(layer):\n"
            "    return isinstance(layer, FusedMoE) or isinstance(layer, SharedFusedMoE)\n",
            _IMPORT_AFTER + "def is_moe(layer):\n    return isinstance(layer, FusedMoE)\n",
            "isinstance or isinstance keeps one",
        ),
        Rewrite(
            _IMPORT + "# source_layer is FusedMoE or SharedFusedMoE\nx = SharedFusedMoE\n",
            _IMPORT_AFTER + "# source_layer is FusedMoE\nx = FusedMoE\n",
            "a comment stays true",
        ),
        Rewrite(
            _IMPORT + "KERNELS = {FusedMoE: fused_experts, SharedFusedMoE: fused_experts}\n",
            _IMPORT_AFTER + "KERNELS = {FusedMoE: fused_experts}\n",
            "a table keeps one FusedMoE row",
        ),
        Flagged(
            _IMPORT + "PROFILES = [(FusedMoE, 'routed'), (SharedFusedMoE, 'routed+shared')]\n",
            lines=(2,),
            note="a table whose two rows differ",
        ),
        Flagged(
            "import vllm.model_executor.layers.fused_moe.layer as fml\n" + _IMPORT
            + "HANDLERS = {}\nHANDLERS[fml.FusedMoE] = 'routed'\nHANDLERS[SharedFusedMoE] = 'routed+shared'\n",
            lines=(5,),
            note="rows assigned one by one, FusedMoE through a module alias",
        ),
        Flagged(
            "import vllm.model_executor.layers.fused_moe.layer as fml\n"
            "import vllm.model_executor.layers.fused_moe.shared_fused_moe as sfm\n"
            "LAYER_MAP = {fml.FusedMoE: 'QuantFusedMoE', sfm.SharedFusedMoE: 'QuantSharedFusedMoE'}\n",
            lines=(3,),
            note="a table keyed through two module aliases",
        ),
        Rewrite(
            _IMPORT + "# The ``FusedMoE``/``SharedFusedMoE`` weights\nx = SharedFusedMoE\n",
            _IMPORT_AFTER + "# The ``FusedMoE`` weights\nx = FusedMoE\n",
            "a quoted pair in a comment",
        ),
        Rewrite(
            _IMPORT + "# Wrapper for vLLM's SharedFusedMoE (v0.16-v0.19)\nx = SharedFusedMoE\n",
            _IMPORT_AFTER + "# Wrapper for vLLM's SharedFusedMoE (v0.16-v0.19)\nx = FusedMoE\n",
            "history in a comment stays as written",
        ),
        Rewrite(
            _IMPORT + 'def build():\n    """Build a SharedFusedMoE.\n\n'
            '    Written for vLLM v0.16, whose SharedFusedMoE took use_overlapped.\n    """\n'
            "    return SharedFusedMoE()\n",
            _IMPORT_AFTER + 'def build():\n    """Build a FusedMoE.\n\n'
            '    Written for vLLM v0.16, whose SharedFusedMoE took use_overlapped.\n    """\n'
            "    return FusedMoE()\n",
            "a docstring: its line about history stays, the others are updated",
        ),
        Unchanged(
            "class SharedFusedMoE:\n    pass\n\n# SharedFusedMoE is ours\nx = SharedFusedMoE()\n",
            "a project's own class",
        ),
        Unchanged(
            _IMPORT_AFTER + "logger.info('SharedFusedMoE is gone')\n",
            "text in a log message",
        ),
        Rewrite(
            _IMPORT + "# Handle the tuple SharedFusedMoE returns\nout = SharedFusedMoE(shared_experts=mlp)(x, r)\n",
            _IMPORT_AFTER + "# Handle the tuple SharedFusedMoE returns\nout = FusedMoE(shared_experts=mlp)(x, r)\n",
            "a comment about the pair it returned stays as written (renamed, it would be false)",
        ),
        Unchanged(
            "from vllm_ascend.ops import AscendSharedFusedMoE\nx = AscendSharedFusedMoE()\n",
            "a name that merely contains it",
        ),
    )

    @classmethod
    def applies_to(cls, file: FileContext) -> bool:
        return not is_removal_target(file)

    def visit_Module(self, node: cst.Module) -> None:
        analysis = self.shared(analyse)
        self._analysis = analysis
        #: id(ref) -> the name it becomes
        self._renames: dict[int, tuple[str, str]] = {}
        for binding in analysis.classes:
            if analysis.is_held(binding):
                continue  # a use of it is left for a human: so are all the others (`_uses`)
            new = analysis.new_local.get(id(binding.alias), NEW_CLASS) or NEW_CLASS
            if new != binding.local:
                for ref in binding.references:
                    self._renames[id(ref)] = (binding.local, new)
        self._packages: dict[int, Binding] = {
            id(ref): b for b in analysis.packages for ref in b.references
        }
        # Prose stays as it was while code in the file still says SharedFusedMoE, and where the
        # file tests whether the class exists ("runs with and without SharedFusedMoE").
        uses = analysis.uses
        held = analysis.held or analysis.held_nodes or (uses and (uses.fallbacks or uses.module_kept))
        self._prose = not (analysis.defines_own or held) and (
            analysis.uses_vllm_class or (self.file.module or "").startswith("vllm.")
        )
        self._docstring(node)
        self._tables(analysis)

    # -- names -------------------------------------------------------------------------------

    def visit_Name(self, node: cst.Name) -> None:
        rename = self._renames.get(id(node))
        if rename is not None:
            self.replace(node, cst.Name(rename[1]))

    def visit_SimpleString(self, node: cst.SimpleString) -> None:
        # A string annotation: the scope analysis records the string itself as the reference.
        rename = self._renames.get(id(node))
        if rename is not None:
            old, new = rename
            value = re.sub(rf"\b{re.escape(old)}\b", new, node.value)
            self.replace(node, node.with_changes(value=value))

    def visit_Attribute(self, node: cst.Attribute) -> None:
        head = attribute_head(node)
        binding = self._packages.get(id(head)) if head is not None else None
        if binding is None or id(node) in self._analysis.held_nodes:
            return
        name = get_full_name_for_node(node) or ""
        qualified = binding.target + name[len(binding.local) :]
        if qualified in OLD_QUALNAMES:
            self.replace(node, dotted(binding.local + NEW_QUALNAME[len(binding.target) :]))

    # -- one FusedMoE, not two ---------------------------------------------------------------

    def _is_fused_moe(self, node: cst.BaseExpression) -> tuple[bool, bool]:
        """(names vLLM's FusedMoE after the migration, named SharedFusedMoE before)."""
        if id(node) in self._renames:
            return True, True
        if isinstance(node, cst.Name):
            if id(node) in self._analysis.fused_refs:
                return True, False
            return False, False
        head = attribute_head(node)
        binding = self._packages.get(id(head)) if head is not None else None
        if binding is None or id(node) in self._analysis.held_nodes:
            return False, False
        name = get_full_name_for_node(node) or ""
        qualified = binding.target + name[len(binding.local) :]
        return qualified in OLD_QUALNAMES | NEW_QUALNAMES, qualified in OLD_QUALNAMES

    def visit_Call(self, node: cst.Call) -> None:
        if not _type_test(node) or not isinstance(node.args[1].value, cst.Tuple):
            return
        types = node.args[1].value
        keep = self._dedupe([element.value for element in types.elements])
        if keep is None:
            return
        if len(keep) == 1:
            only = keep[0]
            self.replace(types, lambda updated: updated.elements[only].value)  # type: ignore[attr-defined]
        else:
            self.replace(types, lambda updated: _keep_elements(updated, keep))

    def visit_BooleanOperation(self, node: cst.BooleanOperation) -> None:
        # `isinstance(x, FusedMoE) or isinstance(x, SharedFusedMoE)`: one test once renamed.
        if not isinstance(node.operator, cst.Or):
            return
        left, right = node.left, node.right
        if not (_type_test(left) and _type_test(right) and left.args[0].value.deep_equals(right.args[0].value)):  # type: ignore[attr-defined]
            return
        if self._dedupe([left.args[1].value, right.args[1].value]) == [0]:  # type: ignore[attr-defined]
            self.replace(node, lambda updated: updated.left.with_changes(lpar=updated.lpar, rpar=updated.rpar))

    def visit_BinaryOperation(self, node: cst.BinaryOperation) -> None:
        # `FusedMoE | SharedFusedMoE` in an annotation.
        if not isinstance(node.operator, cst.BitOr):
            return
        keep = self._dedupe([node.left, node.right])
        if keep is not None:
            side = "left" if keep == [0] else "right"
            self.replace(node, lambda updated: getattr(updated, side))

    def _dedupe(self, items: list[cst.BaseExpression]) -> list[int] | None:
        """Indices to keep so vLLM's FusedMoE appears once; None when nothing repeats."""
        seen = [(i, *self._is_fused_moe(item)) for i, item in enumerate(items)]
        fused = [(i, was_old) for i, is_fused, was_old in seen if is_fused]
        if len(fused) < 2 or not any(was_old for _, was_old in fused):
            return None
        first = fused[0][0]
        dropped = {i for i, _ in fused if i != first}
        return [i for i in range(len(items)) if i not in dropped]

    # -- tables: one FusedMoE row, not two ----------------------------------------------------

    def _tables(self, analysis: Analysis) -> None:
        """``{FusedMoE: h, SharedFusedMoE: h}`` loses its second row; different handlers are flagged."""
        uses = analysis.uses
        if uses is None:
            return
        for use in uses.held:
            if use.rule == self.ID:
                fused, own = use.detail
                self.flag(
                    use.node,
                    f"This table maps `{NEW_CLASS}` to `{fused}` and `{OLD_CLASS}` to `{own}`. Once "
                    f"the class is gone every MoE layer is a `{NEW_CLASS}`: renamed, the table would "
                    "hold two FusedMoE rows and one handler would silently win for every layer, so "
                    "the row was left as it was.",
                    fix=f"Merge the two handlers into the `{NEW_CLASS}` row (inside it, branch on "
                    f"whether the layer has shared experts), then delete the `{OLD_CLASS}` row.",
                )
        drops: dict[int, tuple[cst.CSTNode, set[int]]] = {}
        for table, row in uses.duplicate_rows:
            index = next(i for i, e in enumerate(table.elements) if e is row)  # type: ignore[attr-defined]
            drops.setdefault(id(table), (table, set()))[1].add(index)
        for table, drop in drops.values():
            keep = [i for i in range(len(table.elements)) if i not in drop]  # type: ignore[attr-defined]
            self.replace(table, lambda updated, keep=keep: _keep_rows(updated, keep))

    # -- prose -------------------------------------------------------------------------------

    def visit_Comment(self, node: cst.Comment) -> None:
        if not self._prose or not _renamable(node.value) or _is_commented_out_code(node.value):
            return
        self.replace(node, node.with_changes(value=rewrite_prose(node.value)))

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self._docstring(node)

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self._docstring(node)

    def _docstring(self, node: cst.Module | cst.ClassDef | cst.FunctionDef) -> None:
        if not self._prose:
            return
        body = node.body if isinstance(node, cst.Module) else node.body.body
        if not body or not isinstance(body[0], cst.SimpleStatementLine):
            return
        first = body[0].body[0] if body[0].body else None
        if not (isinstance(first, cst.Expr) and isinstance(first.value, cst.SimpleString)):
            return
        string = first.value
        if _renamable(string.value):
            self.replace(string, lambda updated: updated.with_changes(value=rewrite_prose(updated.value)))


def _type_test(node: cst.BaseExpression) -> bool:
    """``isinstance(x, T)`` or ``issubclass(x, T)``."""
    return (
        isinstance(node, cst.Call)
        and get_full_name_for_node(node.func) in ("isinstance", "issubclass")
        and len(node.args) == 2
    )


def _keep_elements(types: cst.Tuple, keep: list[int]) -> cst.Tuple:
    dropped = set(range(len(types.elements))) - set(keep)
    return types.with_changes(elements=drop_at(types.elements, dropped))



def _keep_rows(table: cst.Dict | cst.List | cst.Tuple | cst.Set, keep: list[int]) -> cst.CSTNode:
    """``table`` with only the rows at ``keep``; a tuple left with one row keeps its comma."""
    kept = _keep_elements(table, keep)  # type: ignore[arg-type]
    only = kept.elements[0] if len(kept.elements) == 1 else None
    if isinstance(kept, cst.Tuple) and only is not None and only.comma is cst.MaybeSentinel.DEFAULT:
        return kept.with_changes(elements=[only.with_changes(comma=cst.Comma())])
    return kept
