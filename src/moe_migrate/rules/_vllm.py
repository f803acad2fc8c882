"""vLLM's MoE names, and which bindings of a module point at the removed class.

Shared by the SharedFusedMoE rules: one analysis per file (``Rule.shared``), so the import rule
and the reference rule always agree on what each binding becomes. Names are matched by what
they are bound to (the import that binds them, resolved by :mod:`codemod.scopes`), never
by spelling. The analysis also decides which bindings are *held* (``Analysis.held``): where a
use of the class is left for a human (``_uses``), the renames leave the file's bindings, their
imports and every reference as they were.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import libcst as cst
from libcst.helpers import get_full_name_for_node
from libcst.metadata import MetadataWrapper

from moe_migrate.codemod import scopes as scope_analysis
from moe_migrate.codemod.context import FileContext
from moe_migrate.codemod.scopes import Assignment, ImportAssignment, Scope, Scopes

if TYPE_CHECKING:
    from moe_migrate.rules._uses import Uses

PACKAGE = "vllm.model_executor.layers.fused_moe"
OLD_CLASS = "SharedFusedMoE"
NEW_CLASS = "FusedMoE"
#: Modules that defined the removed class: the current one, then its earlier home (vLLM 0.10.2:
#: a package ``layers/shared_fused_moe/`` that re-exported it from a module of the same name).
_EARLIER = "vllm.model_executor.layers.shared_fused_moe"
OLD_MODULES = (f"{PACKAGE}.shared_fused_moe", _EARLIER, f"{_EARLIER}.shared_fused_moe")
OLD_QUALNAMES = frozenset(f"{m}.{OLD_CLASS}" for m in (PACKAGE, *OLD_MODULES))
NEW_QUALNAMES = frozenset({f"{PACKAGE}.{NEW_CLASS}", f"{PACKAGE}.layer.{NEW_CLASS}"})
#: What the removed class's uses become.
NEW_QUALNAME = f"{PACKAGE}.{NEW_CLASS}"
#: Alias used when ``FusedMoE`` already names something else in the file.
FALLBACK_ALIAS = "VllmFusedMoE"


def is_removal_target(file: FileContext) -> bool:
    """The package ``__init__`` and the old class modules: the tree-level removal edits those."""
    if file.module is not None:
        return file.module == PACKAGE or file.module in OLD_MODULES
    path = "/" + file.path
    return path.endswith("/vllm/model_executor/layers/fused_moe/__init__.py") or any(
        path.endswith("/" + m.replace(".", "/") + ".py") for m in OLD_MODULES
    )


def in_fused_moe_package(file: FileContext) -> bool:
    """True inside ``vllm/model_executor/layers/fused_moe/``, which the removal rewrites itself."""
    if file.module is not None:
        return file.module == PACKAGE or file.module.startswith(PACKAGE + ".")
    return "/vllm/model_executor/layers/fused_moe/" in "/" + file.path


@dataclass(eq=False)
class Binding:
    """One name bound by one import alias in one scope."""

    alias: cst.ImportAlias
    statement: cst.Import | cst.ImportFrom
    scope: Scope
    #: The name the import binds in ``scope`` (``m`` for ``import a.b as m``, ``a`` for ``import a.b``).
    local: str
    #: The dotted name it is bound to.
    target: str
    #: Nodes that read the binding: ``Name`` nodes, or the string of a string annotation.
    references: tuple[cst.CSTNode, ...]


@dataclass(eq=False)
class Analysis:
    """Every binding of the module that reaches vLLM's removed class, and what it becomes."""

    #: Bindings of the class itself (``from ... import SharedFusedMoE [as X]``).
    classes: list[Binding] = field(default_factory=list)
    #: Bindings of the old module object (``import ...shared_fused_moe as m``).
    old_modules: list[Binding] = field(default_factory=list)
    #: Bindings of a package above the class (``vllm``, ``...fused_moe as fm``).
    packages: list[Binding] = field(default_factory=list)
    #: Bindings of a module above vLLM's ``FusedMoE`` alone (``...fused_moe.layer as fml``).
    fused_modules: list[Binding] = field(default_factory=list)
    #: id(alias) -> the local name the class binding becomes; ``None``: the alias is dropped
    #: because vLLM's ``FusedMoE`` is already bound under that name.
    new_local: dict[int, str | None] = field(default_factory=dict)
    #: ids of the nodes that read a binding of vLLM's ``FusedMoE`` itself.
    fused_refs: set[int] = field(default_factory=set)
    #: True when the module's own code binds ``SharedFusedMoE`` to something that is not vLLM's.
    defines_own: bool = False
    #: ids of bindings (their aliases) the renames leave exactly as they are, import included,
    #: because a use of theirs is left for a human: no name is ever left undefined.
    held: set[int] = field(default_factory=set)
    #: ids of attribute chains (``fm.SharedFusedMoE``) and import statements left as they are.
    held_nodes: set[int] = field(default_factory=set)
    #: What the findings rules report, and what the renames must leave alone (``_uses``).
    uses: "Uses | None" = None
    #: The module's scopes, which the other rules read too (one analysis per file).
    scopes: Scopes = field(default_factory=lambda: Scopes([], {}))

    @property
    def uses_vllm_class(self) -> bool:
        return bool(self.classes or self.old_modules or self.packages)

    def is_held(self, binding: Binding) -> bool:
        return id(binding.alias) in self.held


def _import_targets(
    statement: cst.Import | cst.ImportFrom, file: FileContext
) -> list[tuple[cst.ImportAlias, str, str]]:
    """(alias, local name, dotted target) for every alias of an import statement."""
    out: list[tuple[cst.ImportAlias, str, str]] = []
    if isinstance(statement, cst.Import):
        for alias in statement.names:
            dotted = get_full_name_for_node(alias.name) or ""
            if alias.asname is not None:
                local = get_full_name_for_node(alias.asname.name) or ""
                out.append((alias, local, dotted))
            else:
                head = dotted.split(".")[0]
                out.append((alias, head, head))
        return out
    if isinstance(statement.names, cst.ImportStar):
        return out
    module = get_full_name_for_node(statement.module) if statement.module else None
    base = file.resolve_relative(len(statement.relative), module)
    if base is None:
        return out
    for alias in statement.names:
        name = get_full_name_for_node(alias.name) or ""
        local = get_full_name_for_node(alias.asname.name) if alias.asname else name
        out.append((alias, local or name, f"{base}.{name}"))
    return out


def _dotted_import_of(statement: cst.CSTNode, alias: cst.ImportAlias, name: str) -> bool:
    """``name`` is a dotted prefix bound by ``import <alias>`` (no ``as``)."""
    if not isinstance(statement, cst.Import) or alias.asname is not None or "." not in name:
        return False
    full = get_full_name_for_node(alias.name) or ""
    return full == name or full.startswith(name + ".")


def _is_prefix_of(target: str, qualnames: frozenset[str]) -> bool:
    return any(q.startswith(target + ".") for q in qualnames)


def bound_to(
    scope: Scope,
    name: str,
    qualnames: frozenset[str],
    file: FileContext,
    skip: Callable[[Assignment], bool] = lambda _: False,
) -> bool | None:
    """What ``name`` is where ``scope`` is: True, only imports of one of ``qualnames``; False,
    something else too; None, unbound. Assignments for which ``skip`` is true do not count."""
    assignments = [a for a in scope[name] if not skip(a)]
    if not assignments:
        return None
    for assignment in assignments:
        if not isinstance(assignment, ImportAssignment):
            return False
        targets = _import_targets(assignment.node, file)
        if not any(local == name and target in qualnames for _, local, target in targets):
            return False
    return True


def import_target(
    scope: Scope, name: str, file: FileContext, skip: Callable[[Assignment], bool] = lambda _: False
) -> str | None:
    """The dotted name ``name`` was imported as, where ``scope`` is, when every binding of it
    there is an import of that one name (assignments for which ``skip`` is true aside)."""
    targets: set[str] = set()
    for assignment in scope[name]:
        if skip(assignment):
            continue
        if not isinstance(assignment, ImportAssignment):
            return None
        targets.update(t for _, local, t in _import_targets(assignment.node, file) if local == name)
    return targets.pop() if len(targets) == 1 else None


def _vllm_fused_moe_bound(
    binding: Binding, name: str, file: FileContext, ignore: frozenset[int] = frozenset()
) -> bool | None:
    """True: ``name`` is vLLM's FusedMoE where ``binding`` is; False: something else; None: free.

    The binding's own import, and assignments whose node is in ``ignore`` (inside a fallback
    block that goes), do not count.
    """
    return bound_to(
        binding.scope,
        name,
        NEW_QUALNAMES,
        file,
        lambda a: a.node is binding.statement or id(a.node) in ignore,
    )


def _free_alias(scopes: list[Scope]) -> str:
    candidate, n = FALLBACK_ALIAS, 1
    while any(scope[candidate] for scope in scopes):
        n += 1
        candidate = f"{FALLBACK_ALIAS}{n}"
    return candidate


def analyse(wrapper: MetadataWrapper, file: FileContext) -> Analysis:
    """Find the bindings of vLLM's removed class and decide what each one becomes."""
    analysis = Analysis()
    analysis.scopes = scope_analysis.analyse(wrapper)
    scopes = analysis.scopes.scopes
    own: list[cst.CSTNode] = []  # what binds `SharedFusedMoE` to something not vLLM's
    for scope in scopes:
        for assignment in scope.assignments:
            if not isinstance(assignment, ImportAssignment):
                if assignment.name == OLD_CLASS:
                    own.append(assignment.node)
                continue
            statement = assignment.node
            for alias, local, target in _import_targets(statement, file):
                if _dotted_import_of(statement, alias, assignment.name):
                    # `import a.b.c` is also bound as "a.b.c": its uses are `a.b.c.X` chains,
                    # recorded against the longest imported prefix, whose node is `a.b.c`.
                    local = target = assignment.name
                elif local != assignment.name:
                    continue
                refs = tuple(access.node for access in assignment.references)
                binding = Binding(alias, statement, scope, local, target, refs)
                if target in OLD_QUALNAMES:
                    analysis.classes.append(binding)
                elif target in OLD_MODULES:
                    analysis.old_modules.append(binding)
                elif _is_prefix_of(target, OLD_QUALNAMES):
                    analysis.packages.append(binding)
                elif _is_prefix_of(target, NEW_QUALNAMES):
                    analysis.fused_modules.append(binding)
                elif local == OLD_CLASS:
                    own.append(statement)
                if target in NEW_QUALNAMES:
                    analysis.fused_refs.update(id(ref) for ref in refs)
    gone: frozenset[int] = frozenset()
    if analysis.uses_vllm_class or analysis.fused_refs:
        # Imported here: `_uses` builds on the bindings this module defines.
        from moe_migrate.rules._uses import find_uses

        analysis.uses = find_uses(wrapper, analysis, scopes, file)
        gone = analysis.uses.fallback_nodes
    # `except ImportError: SharedFusedMoE = FusedMoE` is vLLM's class under another name.
    analysis.defines_own = any(id(node) not in gone for node in own)
    for binding in analysis.classes:
        analysis.new_local[id(binding.alias)] = _new_local(binding, scopes, file, gone)
    return analysis


def _new_local(
    binding: Binding, scopes: list[Scope], file: FileContext, gone: frozenset[int]
) -> str | None:
    if binding.local not in (OLD_CLASS, NEW_CLASS):
        return binding.local  # an alias of the user's choosing is kept: `... as SFM`
    bound = _vllm_fused_moe_bound(binding, NEW_CLASS, file, gone)
    if bound is True:
        return None  # `FusedMoE` is already vLLM's here: drop the alias, never bind it twice
    if bound is False:
        return _free_alias(scopes)  # `FusedMoE` is the project's own: don't shadow it
    return NEW_CLASS


def attribute_head(node: cst.CSTNode) -> cst.Name | None:
    """The leftmost ``Name`` of a dotted ``a.b.c`` chain, or None for anything else."""
    while isinstance(node, cst.Attribute):
        node = node.value
    return node if isinstance(node, cst.Name) else None
