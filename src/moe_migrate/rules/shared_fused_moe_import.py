"""shared-fused-moe-import: import vLLM's ``FusedMoE`` wherever ``SharedFusedMoE`` was imported."""

from __future__ import annotations

import libcst as cst
from libcst.helpers import get_full_name_for_node

from moe_migrate.codemod.context import FileContext
from moe_migrate.codemod.imports import dotted, isort_key
from moe_migrate.codemod.rule import Flagged, Rewrite, Rule, Unchanged
from moe_migrate.codemod.sequence import drop_at
from moe_migrate.rules._uses import Use
from moe_migrate.rules._vllm import (
    NEW_CLASS,
    OLD_CLASS,
    OLD_MODULES,
    PACKAGE,
    Analysis,
    Binding,
    analyse,
    in_fused_moe_package,
    is_removal_target,
)

_PKG_PARENT, _, _PKG_LEAF = PACKAGE.rpartition(".")


class SharedFusedMoeImport(Rule):
    """Import vLLM's `FusedMoE` wherever `SharedFusedMoE` or its module was imported.

    Why: vLLM removed `SharedFusedMoE` (PR #35782). `FusedMoE` takes `shared_experts=` itself,
    the package `vllm.model_executor.layers.fused_moe` no longer exports the old name, and the
    module `vllm.model_executor.layers.fused_moe.shared_fused_moe` is gone, so every import of
    the class or its module fails on upgrade.

    Fix safety: safe. The import is merged with what the scope already imports, so a name is
    never bound twice, and an import from the deleted module joins an earlier top-level
    import from the package; an alias of the user's choosing is kept; a block of sorted names
    stays sorted; if `FusedMoE` already names something else in the file, vLLM's class is imported
    as `VllmFusedMoE`. An import of the old module object is rewritten with its uses; if the
    module is used for anything but the class, it is reported instead. A module that
    re-exports the class under its old name (its `__all__` lists "SharedFusedMoE", or it
    imports it `as SharedFusedMoE`) is reported and left whole: renamed, the name it exports
    would be unbound, and which name a plugin's API should keep is not for a rename to guess.
    A `SharedFusedMoE` that only a star import from vLLM's package binds is reported at the
    star import: after the upgrade the name is undefined.
    Always runs together with `shared-fused-moe-reference`, which renames the uses.
    """

    ID = "shared-fused-moe-import"
    EXAMPLES = (
        Rewrite(
            "from vllm.model_executor.layers.fused_moe import SharedFusedMoE\n",
            "from vllm.model_executor.layers.fused_moe import FusedMoE\n",
            "from the package",
        ),
        Rewrite(
            "from vllm.model_executor.layers.fused_moe.shared_fused_moe import SharedFusedMoE\n",
            "from vllm.model_executor.layers.fused_moe import FusedMoE\n",
            "from the deleted module",
        ),
        Rewrite(
            "from vllm.model_executor.layers.fused_moe import FusedMoE, SharedFusedMoE\n",
            "from vllm.model_executor.layers.fused_moe import FusedMoE\n",
            "merged with an existing import",
        ),
        Rewrite(
            "from vllm.model_executor.layers.fused_moe import (\n"
            "    GateLinear,\n"
            "    RoutingMethodType,\n"
            "    SharedFusedMoE,\n"
            ")\n",
            "from vllm.model_executor.layers.fused_moe import (\n"
            "    FusedMoE,\n"
            "    GateLinear,\n"
            "    RoutingMethodType,\n"
            ")\n",
            "a sorted block stays sorted",
        ),
        Rewrite(
            "from vllm.model_executor.layers.fused_moe import fused_experts\n"
            "from vllm.model_executor.layers.fused_moe.shared_fused_moe import SharedFusedMoE\n",
            "from vllm.model_executor.layers.fused_moe import FusedMoE, fused_experts\n",
            "from the deleted module, joining the package's import",
        ),
        Rewrite(
            "from vllm.model_executor.layers.shared_fused_moe.shared_fused_moe import SharedFusedMoE\n",
            "from vllm.model_executor.layers.fused_moe import FusedMoE\n",
            "from its module in vLLM 0.10.2",
        ),
        Rewrite(
            "from vllm.model_executor.layers.fused_moe import SharedFusedMoE as SFM\n",
            "from vllm.model_executor.layers.fused_moe import FusedMoE as SFM\n",
            "an alias is kept",
        ),
        Rewrite(
            "from vllm.model_executor.layers.fused_moe import SharedFusedMoE as MoELayer\n\n"
            '__all__ = ["MoELayer"]\n',
            "from vllm.model_executor.layers.fused_moe import FusedMoE as MoELayer\n\n"
            '__all__ = ["MoELayer"]\n',
            "exported under an alias of the module's own: the alias and the export stay",
        ),
        Flagged(
            "from vllm.model_executor.layers.fused_moe import SharedFusedMoE\n\n"
            "from .linear import MyLinear\n\n"
            '__all__ = ["MyLinear", "SharedFusedMoE"]\n',
            lines=(5,),
            note="a plugin module that re-exports the class: left whole",
            module="myplug.layers",
            is_package=True,
        ),
        Flagged(
            "from vllm.model_executor.layers.fused_moe import SharedFusedMoE as SharedFusedMoE\n",
            lines=(1,),
            note="the explicit re-export form",
            module="myplug.layers",
            is_package=True,
        ),
        Flagged(
            "from vllm.model_executor.layers.fused_moe import *\n\n"
            "layer = SharedFusedMoE(shared_experts=mlp, num_experts=8)\n",
            lines=(1,),
            note="the class from a star import",
        ),
        Unchanged(
            "from vllm.model_executor.layers.fused_moe import *\n\n"
            "layer = FusedMoE(num_experts=8)\nname = config.SharedFusedMoE\n",
            "a star import, and an attribute of that name",
        ),
        Rewrite(
            "import vllm.model_executor.layers.fused_moe.shared_fused_moe as sfm\n"
            "layer = sfm.SharedFusedMoE\n",
            "import vllm.model_executor.layers.fused_moe as sfm\n"
            "layer = sfm.FusedMoE\n",
            "the module object, with its uses",
        ),
        Flagged(
            "import vllm.model_executor.layers.fused_moe.shared_fused_moe as sfm\n"
            "fn = sfm.tensor_model_parallel_all_reduce\n",
            lines=(1,),
            note="the deleted module used for something else",
        ),
        Unchanged(
            "from vllm_ascend.ops.fused_moe import SharedFusedMoE\n",
            "a plugin's own class of that name",
        ),
        Unchanged(
            "from vllm.model_executor.layers.fused_moe import AscendSharedFusedMoE\n",
            "a name that merely contains it",
        ),
        Unchanged(
            "from myplug.ops import SharedFusedMoE\n\n"
            '__all__ = ["SharedFusedMoE"]\n',
            "a plugin exporting its own class of that name",
        ),
        Unchanged(
            "from vllm.model_executor.layers.fused_moe import FusedMoE\n\n"
            "SharedFusedMoE = FusedMoE\n"
            '__all__ = ["FusedMoE", "SharedFusedMoE"]\n',
            "a deliberate alias that keeps the name in a plugin's API",
        ),
    )

    @classmethod
    def applies_to(cls, file: FileContext) -> bool:
        # vLLM's own package is rewritten by the tree-level removal, never by a rename that
        # could make the package import itself.
        return not is_removal_target(file)

    def visit_Module(self, node: cst.Module) -> None:
        analysis = self.shared(analyse)
        #: `from <vLLM's package or the deleted module> import *` statements.
        self._stars: list[cst.ImportFrom] = []
        self._removed: set[int] = set()
        self._module = node
        for use in analysis.uses.held if analysis.uses else ():
            if use.rule == self.ID:
                self._report_export(use)
        # A held binding keeps its import: one of its uses is left for a human (see `_uses`).
        for statement in {
            id(b.statement): b.statement for b in analysis.classes if not analysis.is_held(b)
        }.values():
            if isinstance(statement, cst.ImportFrom):
                self._rewrite_class_import(statement, analysis)
        self._module_renames = _old_module_uses(node, analysis)
        for binding in analysis.old_modules:
            if analysis.is_held(binding):
                continue
            uses = self._module_renames.get(id(binding.alias))
            if uses is None:
                self._flag_kept_module(binding, analysis)
                continue
            self._rewrite_module_import(binding.statement, binding.alias)
            for attribute in uses:
                if "." in binding.local:
                    # `import a.b.shared_fused_moe` used as `a.b.shared_fused_moe.SharedFusedMoE`
                    self.replace(attribute, dotted(f"{PACKAGE}.{NEW_CLASS}"))
                else:
                    self.replace(attribute.attr, cst.Name(NEW_CLASS))

    def _report_export(self, use: Use) -> None:
        """The module re-exports the class: its ``__all__`` lists it, or ``... as SharedFusedMoE``."""
        how = (
            f'`__all__` lists "{OLD_CLASS}", a name this module binds by importing vLLM\'s removed class'
            if use.kind == "all"
            else f"This imports vLLM's removed class `as {OLD_CLASS}`, the explicit form of a re-export"
        )
        self.flag(
            use.node,
            f"{how}: the module re-exports the class. Renamed, the import would no longer bind "
            f"`{OLD_CLASS}`, and `from {self.file.module or 'this module'} import *` or an import "
            f"of `{OLD_CLASS}` from it would fail; the import and every use of the name in this "
            "file were left as they were.",
            fix=f'Drop "{OLD_CLASS}" from what this module exports, and have the modules that '
            f"import it from here import `{NEW_CLASS}` from `{PACKAGE}`; if this module's API must "
            f"keep the name, import `{NEW_CLASS}` and keep a deliberate alias `{OLD_CLASS} = "
            f"{NEW_CLASS}`.",
        )

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        if isinstance(node.names, cst.ImportStar):
            module = get_full_name_for_node(node.module) if node.module else None
            if self.file.resolve_relative(len(node.relative), module) in (PACKAGE, *OLD_MODULES):
                self._stars.append(node)

    def leave_Module(self, original_node: cst.Module) -> None:
        # Rare: only a file with such a star import is searched for a bare `SharedFusedMoE`.
        analysis = self.shared(analyse)
        if not self._stars or analysis.classes or analysis.defines_own:
            return
        reads = _BareName(OLD_CLASS)
        original_node.visit(reads)
        if not reads.found:
            return
        for star in self._stars:
            self.flag(
                star,
                f"`{OLD_CLASS}` in this file comes from this star import. vLLM's package no "
                f"longer exports it (and the module `{OLD_MODULES[0]}` is gone), so after the "
                "upgrade the name is undefined.",
                fix=f"Import `{NEW_CLASS}` from `{PACKAGE}` by name and use it where this file "
                f"says `{OLD_CLASS}`.",
            )

    def _flag_kept_module(self, binding: Binding, analysis: Analysis) -> None:
        """The deleted module, bound for more than its class: its import stays, reported."""
        found = analysis.uses
        if found is not None and not found.module_used:
            self.flag(
                binding.statement,
                f"`{binding.local}` is vLLM's deleted module `{binding.target}`, imported so that "
                f"the code can tell whether it exists (`{binding.local} is None`). After the "
                "upgrade the import always fails, so the code for its absence is what runs.",
                fix=f"Make that code handle `{NEW_CLASS}` layers with shared experts (or use "
                f"`{NEW_CLASS}` from `{PACKAGE}` unconditionally), then drop the import.",
            )
            return
        self.flag(
            binding.statement,
            f"`{binding.local}` is vLLM's deleted module `{binding.target}`, used here for more "
            f"than `{OLD_CLASS}`.",
            fix=f"Import what else you use from where it lives now, and `{NEW_CLASS}` from "
            f"`{PACKAGE}`.",
        )

    def visit_If(self, node: cst.If) -> None:
        # `if TYPE_CHECKING:` that only imported the class goes, rather than keep a bare `pass`.
        body = node.body
        if node.orelse is None and isinstance(body, cst.IndentedBlock) and body.body:
            if all(self._line_removed(line) for line in body.body):
                self.remove(node)

    def _line_removed(self, line: cst.BaseStatement) -> bool:
        return isinstance(line, cst.SimpleStatementLine) and all(
            id(small) in self._removed for small in line.body
        )

    def _rewrite_class_import(self, statement: cst.ImportFrom, analysis: Analysis) -> None:
        assert not isinstance(statement.names, cst.ImportStar)
        module = get_full_name_for_node(statement.module) if statement.module else None
        absolute = self.file.resolve_relative(len(statement.relative), module)
        from_old_module = absolute in OLD_MODULES
        plan: list[tuple[cst.ImportAlias, str | None, str | None]] = []  # alias, name, asname
        for alias in statement.names:
            name = get_full_name_for_node(alias.name) or ""
            asname = get_full_name_for_node(alias.asname.name) if alias.asname else None
            if id(alias) in analysis.new_local:
                local = analysis.new_local[id(alias)]
                if local is None:
                    plan.append((alias, None, None))
                    continue
                plan.append((alias, NEW_CLASS, None if local == NEW_CLASS else local))
            elif from_old_module and name != NEW_CLASS:
                self.flag(
                    alias,
                    f"`{name}` is imported from vLLM's deleted module `{absolute}`.",
                    fix=f"Import `{name}` from where it is defined.",
                )
                return
            else:
                plan.append((alias, name, asname))
        # Two slots that would both bind `FusedMoE` keep the first.
        plain = [i for i, e in enumerate(plan) if e[1:] == (NEW_CLASS, None)]
        for i in plain[1:]:
            plan[i] = (plan[i][0], None, None)
        kept = [entry for entry in plan if entry[1] is not None]
        joins = (
            from_old_module
            and [entry[1:] for entry in kept] == [(NEW_CLASS, None)]
            and self._joins_package_import(statement)
        )
        if not kept or joins:
            self._removed.add(id(statement))
            self.remove(statement)
            if joins:
                self.add_import(PACKAGE, NEW_CLASS)
            return
        new_module = self._package_module(statement) if from_old_module else {}

        def edit(updated: cst.CSTNode) -> cst.CSTNode:
            assert isinstance(updated, cst.ImportFrom)
            names = _apply_plan(list(updated.names), plan, kept)  # type: ignore[arg-type]
            return updated.with_changes(names=names, **new_module)

        self.replace(statement, edit)

    def _joins_package_import(self, statement: cst.ImportFrom) -> bool:
        """``from <deleted module> import SharedFusedMoE`` at the top level, after a top-level
        ``from <package> import ...``: ``FusedMoE`` joins that import instead of a second
        statement from the same module (it is bound earlier, never later, than before)."""
        if in_fused_moe_package(self.file):
            return False
        top = [s for line in self._module.body if isinstance(line, cst.SimpleStatementLine) for s in line.body]
        if statement not in top:
            return False
        earlier = top[: top.index(statement)]
        return any(
            isinstance(s, cst.ImportFrom)
            and not s.relative
            and not isinstance(s.names, cst.ImportStar)
            and s.module is not None
            and get_full_name_for_node(s.module) == PACKAGE
            for s in earlier
        )

    def _package_module(self, statement: cst.ImportFrom) -> dict[str, object]:
        """Changes that point ``statement`` where ``FusedMoE`` lives, relative if it was.

        Inside vLLM's own package that is the class's module (``.layer``), so the package
        never imports itself; elsewhere it is the package.
        """
        target = f"{PACKAGE}.layer" if in_fused_moe_package(self.file) else PACKAGE
        if statement.relative:
            # `from ..layers.shared_fused_moe import X` -> `from ..layers.fused_moe import X`
            base = self.file.resolve_relative(len(statement.relative), None)
            if base is not None and target.startswith(base + "."):
                return {"module": dotted(target[len(base) + 1 :])}
        return {"module": dotted(target), "relative": ()}

    def _rewrite_module_import(
        self, statement: cst.Import | cst.ImportFrom, alias: cst.ImportAlias
    ) -> None:
        if isinstance(statement, cst.Import):
            self.replace(alias.name, dotted(PACKAGE))
            return
        if len(statement.names) != 1 or statement.relative:  # type: ignore[arg-type]
            self.flag(
                statement,
                f"This import brings in vLLM's deleted module `{OLD_MODULES[0]}` together with "
                "other names.",
                fix=f"Split it, then import `{_PKG_LEAF}` from `{_PKG_PARENT}`.",
            )
            return
        local = alias.asname if alias.asname else cst.AsName(name=cst.Name(str(alias.name.value)))
        self.replace(
            statement,
            lambda updated: updated.with_changes(
                module=dotted(_PKG_PARENT),
                names=[alias.with_changes(name=cst.Name(_PKG_LEAF), asname=local)],
            ),
        )


def _apply_plan(
    slots: list[cst.ImportAlias],
    plan: list[tuple[cst.ImportAlias, str | None, str | None]],
    kept: list[tuple[cst.ImportAlias, str | None, str | None]],
) -> list[cst.ImportAlias]:
    """The statement's aliases after the plan: dropped slots go, the rest keep their commas.

    Names are written into the existing slots (so every comma, comment and line break stays
    where it was); if the names were in isort order before, they are put back in order.
    """
    before = [(get_full_name_for_node(a.name) or "") for a in slots]
    was_sorted = before == sorted(before, key=isort_key)
    kept_ids = {id(entry[0]) for entry in kept}
    survivors = drop_at(slots, {i for i, entry in enumerate(plan) if id(entry[0]) not in kept_ids})
    values = [(name, asname) for _, name, asname in kept]
    if was_sorted:
        values.sort(key=lambda v: isort_key(v[0] or ""))
    out = []
    for slot, (name, asname) in zip(survivors, values):
        new_asname = None
        if asname:
            new_asname = (slot.asname or cst.AsName(name=cst.Name(asname))).with_changes(
                name=cst.Name(asname)
            )
        out.append(slot.with_changes(name=cst.Name(name or ""), asname=new_asname))
    return out


class _BareName(cst.CSTVisitor):
    """Whether a module reads ``name`` as a bare name (``x.name`` is an attribute, not it)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.found = False

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        node.value.visit(self)
        return False

    def visit_Name(self, node: cst.Name) -> None:
        self.found = self.found or node.value == self.name


class _AttributeUses(cst.CSTVisitor):
    """Collects ``m.<attr>`` for heads in ``heads``, and heads used any other way."""

    def __init__(self, heads: dict[int, int]) -> None:
        super().__init__()
        self.heads = heads
        self.uses: dict[int, list[cst.Attribute]] = {}
        self.seen: set[int] = set()

    def visit_Attribute(self, node: cst.Attribute) -> None:
        head = node.value
        if id(head) in self.heads and node.attr.value == OLD_CLASS:
            self.uses.setdefault(self.heads[id(head)], []).append(node)
            self.seen.add(id(head))


def _old_module_uses(module: cst.Module, analysis: Analysis) -> dict[int, list[cst.Attribute]]:
    """id(alias) -> its ``m.SharedFusedMoE`` uses, for old-module bindings used only that way."""
    if not analysis.old_modules:
        return {}
    heads = {id(ref): id(b.alias) for b in analysis.old_modules for ref in b.references}
    visitor = _AttributeUses(heads)
    module.visit(visitor)
    out = {}
    for binding in analysis.old_modules:
        if all(id(ref) in visitor.seen for ref in binding.references):
            out[id(binding.alias)] = visitor.uses.get(id(binding.alias), [])
    return out
