"""What a rename of vLLM's removed class cannot fix, and so must leave alone.

Part of the shared analysis: :func:`moe_migrate.rules._vllm.analyse` calls :func:`find_uses`
once per file that binds the class. A use whose meaning changes when the class becomes
``FusedMoE`` is recorded as a :class:`Use` naming the rule that reports it, and the file is
*held*: the rename rules leave every binding of the class in it, their imports and all their
references (``fm.SharedFusedMoE`` chains included) exactly as they were, and the safe rewrites
that assume the new vLLM (dropping a fallback block, a duplicate table row) are not made. A
file is migrated whole or left for a human, never half-migrated, and no name is left undefined.
Holding does not depend on which rules run: ``--ignore`` silences a finding, it never makes the
renames do something unsafe.

Uses that hold their binding, by the rule that reports them:

- ``shared-fused-moe-subclass``: a class deriving from it that overrides ``forward`` or
  ``__init__`` (more than passing the call on), or that has another base which is not a plain
  mixin defined in the same file.
- ``shared-fused-moe-patch``: an attribute of the class assigned or deleted; the class given to
  ``setattr``/``delattr``/``patch.object``/``super``, or to a call named like a patch or a
  registration (``register_patch(..., SharedFusedMoE)``); its own ``forward``/``__init__`` reached
  through it; the class replaced on its module; and the class or its deleted module named in a
  dotted string (a ``patch`` target, a ``sys.modules`` stub).
- ``shared-fused-moe-registry``: ``SharedFusedMoE.register_oot``.
- ``shared-fused-moe-isinstance``: ``isinstance``/``issubclass`` against it, without ``FusedMoE``
  in the same tuple (or ``or``-ed with the same test for ``FusedMoE``), whose answer is
  branched on or kept, or in a function that also tests for ``FusedMoE``.
- ``shared-fused-moe-reference``: a ``{type: handler}`` or ``(type, handler)`` table with rows for
  both classes and different handlers (with the same handler, the row is removed instead),
  also filled row by row (``t[FusedMoE] = h``; such rows are held, never removed).
- ``shared-fused-moe-import-fallback``: a ``try``/``if`` around the import whose fallback is not
  vLLM's ``FusedMoE`` itself.
- ``shared-fused-moe-import``: a module that re-exports the class under its old name: its
  ``__all__`` lists ``"SharedFusedMoE"``, or it imports it ``as SharedFusedMoE``. Renamed, the
  import would no longer bind the name the module exports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterator

import libcst as cst
from libcst.helpers import get_full_name_for_node
from libcst.metadata import MetadataWrapper

from moe_migrate.codemod.context import FileContext
from moe_migrate.codemod.rule import Rule
from moe_migrate.codemod.scopes import Scope, Scopes
from moe_migrate.codemod.walk import children
from moe_migrate.rules._vllm import (
    NEW_QUALNAMES,
    OLD_CLASS,
    OLD_MODULES,
    OLD_QUALNAMES,
    PACKAGE,
    Analysis,
    Binding,
    _import_targets,
    analyse,
    is_removal_target,
)

SUBCLASS = "shared-fused-moe-subclass"
PATCH = "shared-fused-moe-patch"
REGISTRY = "shared-fused-moe-registry"
ISINSTANCE = "shared-fused-moe-isinstance"
REFERENCE = "shared-fused-moe-reference"
IMPORT = "shared-fused-moe-import"

#: Methods the removed class defined itself: reached through it, they are not FusedMoE's.
OWN_METHODS = frozenset({"forward", "__init__"})
#: What an import fallback may catch.
_IMPORT_ERRORS = frozenset({"ImportError", "ModuleNotFoundError", "Exception"})
_DOTTED = re.compile(
    "(?:" + "|".join(re.escape(n) for n in (*OLD_MODULES, f"{PACKAGE}.{OLD_CLASS}")) + r")(?:[.:]\w+)*"
)

Parents = tuple[cst.CSTNode, ...]


def string_value(node: cst.CSTNode) -> str | None:
    """The text of a plain or implicitly concatenated string literal; None for anything else."""
    if isinstance(node, (cst.SimpleString, cst.ConcatenatedString)):
        value = node.evaluated_value
        return value if isinstance(value, str) else None
    return None


def names_removed(text: str) -> bool:
    """True for a dotted name of the class or its deleted module (a patch target, a stub key)."""
    return _DOTTED.fullmatch(text) is not None


def callee(call: cst.Call) -> str:
    """``a.b.c`` of ``a.b.c(...)``; empty when the callee is not a dotted name."""
    return get_full_name_for_node(call.func) or ""


def source(node: cst.CSTNode) -> str:
    return cst.Module([]).code_for_node(node)


@dataclass(frozen=True, eq=False)
class Use:
    """A use of the class that a rename would break; the rule ``rule`` reports it."""

    rule: str
    #: What the construct is; the reporting rule turns it into its message.
    kind: str
    #: Where the finding points.
    node: cst.CSTNode
    #: What the message needs to name (an attribute, a base class, an overridden method).
    detail: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class Fallback:
    """A ``try``/``if`` that imports the class and binds something else when that fails."""

    block: cst.Try | cst.If
    #: Every fallback is vLLM's ``FusedMoE`` itself: the block can become its body.
    safe: bool


@dataclass(eq=False)
class Layers:
    """Where layers of one kind are held: ``self.X`` in a class, or a local ``x``."""

    #: id(ClassDef) -> ``X`` of every ``self.X = <construction>`` in it.
    attributes: dict[int, set[str]] = field(default_factory=dict)
    #: id(FunctionDef or Module) -> local names assigned a construction in it.
    names: dict[int, set[str]] = field(default_factory=dict)


@dataclass(eq=False)
class Uses:
    """Everything the findings rules report about one file, found in one walk."""

    #: Uses left as they are, each with the rule that reports it.
    held: list[Use] = field(default_factory=list)
    fallbacks: list[Fallback] = field(default_factory=list)
    #: ids of the nodes in the ``except`` branches of safe fallbacks (they go with the block).
    fallback_nodes: frozenset[int] = frozenset()
    #: ids of every expression that evaluates to the removed class, and to vLLM's FusedMoE.
    class_exprs: set[int] = field(default_factory=set)
    fused_exprs: set[int] = field(default_factory=set)
    #: Classes of this module deriving from the removed class, by name.
    subclasses: dict[str, cst.ClassDef] = field(default_factory=dict)
    #: Calls that build a layer of the class (or of a subclass defined here).
    constructions: set[int] = field(default_factory=set)
    #: Layers built as the class (or a subclass defined here).
    layers: Layers = field(default_factory=Layers)
    #: True when a binding of the deleted module is used for more than the class: its import
    #: stays, and shared-fused-moe-import reports it.
    module_kept: bool = False
    #: ... and for more than testing whether the import worked (``m is not None``, ``if m:``).
    module_used: bool = False
    #: Names annotated as the class (``experts: SharedFusedMoE`` in a class body stands for
    #: ``self.experts``), whatever built what they hold: what calling them returned is known,
    #: not how the layer was made, so only ``moe-output-tuple`` reads them.
    annotated_layers: Layers = field(default_factory=Layers)
    #: Layers built as vLLM's ``FusedMoE`` with ``shared_experts=``: what the renames make of
    #: the class, and what code migrated by hand says.
    fused_layers: Layers = field(default_factory=Layers)
    #: Calls of vLLM's ``FusedMoE`` itself.
    fused_calls: set[int] = field(default_factory=set)
    #: Classes of this module deriving from vLLM's ``FusedMoE``, by name.
    fused_subclasses: dict[str, cst.ClassDef] = field(default_factory=dict)
    #: (table, row): a row for the class in a table whose FusedMoE row has the same handler.
    duplicate_rows: list[tuple[cst.CSTNode, cst.CSTNode]] = field(default_factory=list)


class _Ancestry:
    """One walk: the parents of the wanted nodes, the classes defined, dotted-name strings, and
    the strings that say the class's name."""

    def __init__(self, wanted: set[int]) -> None:
        self.wanted = wanted
        self.stack: list[cst.CSTNode] = []
        #: id -> (node, its parents, outermost first) for the wanted nodes.
        self.found: dict[int, tuple[cst.CSTNode, Parents]] = {}
        self.classes: dict[str, cst.ClassDef] = {}
        self.names_removed = False
        #: ``"SharedFusedMoE"`` string literals, with their parents.
        self.class_names: list[tuple[cst.CSTNode, Parents]] = []

    def walk(self, node: cst.CSTNode) -> None:
        if id(node) in self.wanted:
            self.found[id(node)] = (node, tuple(self.stack))
        if isinstance(node, cst.ClassDef):
            self.classes.setdefault(node.name.value, node)
        elif isinstance(node, (cst.SimpleString, cst.ConcatenatedString)):
            text = string_value(node)
            self.names_removed = self.names_removed or bool(text and names_removed(text))
            if text == OLD_CLASS:
                self.class_names.append((node, tuple(self.stack)))
        self.stack.append(node)
        for child in children(node):
            self.walk(child)
        self.stack.pop()


def find_uses(
    wrapper: MetadataWrapper, analysis: Analysis, scopes: list[Scope], file: FileContext
) -> Uses:
    """Classify every use of the class in the module, and mark what the renames must hold."""
    uses = Uses()
    local_classes = {  # id of a name that reads a class defined here -> that class
        id(access.node): a.node
        for scope in scopes
        for a in scope.assignments
        if isinstance(a.node, cst.ClassDef)
        for access in a.references
    }
    modules = [*analysis.old_modules, *analysis.packages, *analysis.fused_modules]
    bindings = [*analysis.classes, *modules]
    wanted = {id(ref) for b in bindings for ref in b.references}
    wanted |= analysis.fused_refs | {id(b.statement) for b in analysis.classes} | set(local_classes)
    walk = _Ancestry(wanted)
    walk.walk(wrapper.module)
    found = walk.found

    # Every expression that is the class (`SharedFusedMoE`, `fm.SharedFusedMoE`, `m.SharedFusedMoE`)
    # and every one that is vLLM's FusedMoE, with their parents.
    exprs: list[tuple[cst.CSTNode, Parents, Binding]] = []
    fused: list[tuple[cst.CSTNode, Parents]] = []
    for binding in analysis.classes:
        exprs += [(*found[id(r)], binding) for r in binding.references if id(r) in found]
    for binding in modules:
        for ref in binding.references:
            if id(ref) in found:
                chain = _resolve_chain(*found[id(ref)], binding.target)
                if chain is not None and chain[2] in OLD_QUALNAMES:
                    exprs.append((chain[0], chain[1], binding))
                elif chain is not None:
                    fused.append(chain[:2])
                elif binding in analysis.old_modules:
                    uses.module_kept = True  # the deleted module used for more than the class
                    if not _tests_presence(*found[id(ref)]):
                        uses.module_used = True
    fused += [found[i] for i in analysis.fused_refs if i in found]
    fused_ids = analysis.fused_refs | {id(node) for node, _ in fused}
    uses.class_exprs = {id(expr) for expr, _, _ in exprs}
    uses.fused_exprs = fused_ids
    for expr, ps, _ in exprs:
        cls = _class_with_base(expr, ps)
        if cls is not None:
            uses.subclasses.setdefault(cls.name.value, cls)
    for expr, ps, _ in exprs:
        _record_layer(expr, ps, uses)
        _record_annotated(expr, ps, uses)
    for ref, cls in local_classes.items():
        if ref in found and cls in uses.subclasses.values():
            _record_layer(*found[ref], uses)
    for node, ps in fused:
        cls = _class_with_base(node, ps)
        if cls is not None:
            uses.fused_subclasses.setdefault(cls.name.value, cls)
        elif ps and isinstance(ps[-1], cst.Call) and ps[-1].func is node:
            uses.fused_calls.add(id(ps[-1]))
    # Layers built as vLLM's FusedMoE with shared experts (what the renames make of the class),
    # or as a subclass of it defined here that keeps FusedMoE's forward.
    fused_subclasses = [cls for cls in uses.fused_subclasses.values() if not _defines(cls, "forward")]
    builders = fused + [found[ref] for ref, cls in local_classes.items() if ref in found and cls in fused_subclasses]
    for node, ps in builders:
        if _builds_with_shared_experts(node, ps):
            _record_layer(node, ps, uses, fused=True)
    fused_tests = {id(_function(ps[: t[1]])) for node, ps in fused if (t := _type_test(node, ps))}

    assigned: dict[tuple[int, str], list[cst.BaseExpression]] = {}  # `table[FusedMoE] = h`
    for node, ps in fused:
        if (row := _assigned_row(node, ps, analysis.scopes)) is not None:
            assigned.setdefault(row[1], []).append(row[2])
        elif (literal := _table_row(node, ps)) is not None and (key := _named_table(literal[0], ps, analysis.scopes)):
            assigned.setdefault(key, []).append(literal[2])  # `t = {FusedMoE: h}`, then `t[X] = ...`
    # `m.SharedFusedMoE` of a deleted-module import that stays (it is reported) is not renamed.
    kept = {id(e) for e, _, b in exprs if uses.module_kept and b in analysis.old_modules}
    context = _Context(fused_ids, fused_tests, walk.classes, uses, assigned, frozenset(kept), analysis.scopes)
    for expr, ps, _ in exprs:
        use = _classify(expr, ps, context)
        if use is not None:
            uses.held.append(use)
    uses.held += _reexports(analysis, walk.class_names, file)
    statements = {id(b.alias): found.get(id(b.statement), (None, ()))[1] for b in analysis.classes}
    uses.fallbacks, uses.fallback_nodes = _fallbacks(analysis, statements, fused_ids, file)
    # A dotted string naming the class or its module is a patch or a stub: renaming the imports
    # would silently stop them from seeing it.
    if uses.held or walk.names_removed or not all(f.safe for f in uses.fallbacks):
        analysis.held.update(id(b.alias) for b in [*analysis.classes, *analysis.old_modules])
        for expr, _, binding in exprs:
            if binding in analysis.packages:
                analysis.held_nodes.update((id(expr), id(binding.statement)))
        uses.duplicate_rows.clear()
    return uses


def _reexports(analysis: Analysis, strings: list[tuple[cst.CSTNode, Parents]], file: FileContext) -> list[Use]:
    """The module re-exports vLLM's class under its old name: its ``__all__`` lists it, or it
    imports it ``as SharedFusedMoE`` (the explicit re-export form). Renamed, the import would
    no longer bind the name the module exports; whose API that is, is not for a rename to guess."""
    if is_removal_target(file):
        return []  # vLLM's own package: the tree-level removal stops exporting it
    exported = [b for b in analysis.classes if b.local == OLD_CLASS and b.scope.kind == "module"]
    if not exported:
        return []
    found = [Use(IMPORT, "all", node) for node, ps in strings if _in_all(node, ps)]
    return found + [Use(IMPORT, "as", b.alias) for b in exported if b.alias.asname is not None]


def _in_all(node: cst.CSTNode, ps: Parents) -> bool:
    """``node`` is an entry of the module's ``__all__``: anywhere in the value of
    ``__all__ = ...`` (also ``+=``, annotated, ``Base.__all__ + [...]``), or an argument of
    ``__all__.append(...)`` / ``__all__.extend(...)``."""
    if any(isinstance(p, (cst.FunctionDef, cst.ClassDef, cst.Lambda)) for p in ps):
        return False
    chain = (*ps, node)
    for i in range(1, len(chain)):
        parent, child = chain[i - 1], chain[i]
        if isinstance(parent, cst.Assign) and parent.value is child:
            return any(get_full_name_for_node(t.target) == "__all__" for t in parent.targets)
        if isinstance(parent, (cst.AugAssign, cst.AnnAssign)) and parent.value is child:
            return get_full_name_for_node(parent.target) == "__all__"
        if isinstance(parent, cst.Call) and isinstance(child, cst.Arg):
            return callee(parent) in ("__all__.append", "__all__.extend")
    return False


def _tests_presence(node: cst.CSTNode, ps: Parents) -> bool:
    """``node`` is only tested for being there: ``node is (not) None``, ``if node:``, ``not node``."""
    parent = ps[-1] if ps else None
    if isinstance(parent, cst.Comparison):
        return (
            parent.left is node
            and len(parent.comparisons) == 1
            and isinstance(parent.comparisons[0].operator, (cst.Is, cst.IsNot))
            and isinstance(parent.comparisons[0].comparator, cst.Name)
            and parent.comparisons[0].comparator.value == "None"
        )
    if isinstance(parent, (cst.BooleanOperation, cst.UnaryOperation)):
        return _in_test(parent, ps[:-1])  # `if m and x:`, `not m` in a test; not `m or other`
    return isinstance(parent, (cst.If, cst.While, cst.IfExp)) and parent.test is node


def _in_test(node: cst.CSTNode, ps: Parents) -> bool:
    """``node`` (an ``and``/``or``/``not``) is, or is part of, the test of an ``if``,
    ``while``, conditional expression or ``assert``."""
    while ps and isinstance(ps[-1], (cst.BooleanOperation, cst.UnaryOperation)):
        node, ps = ps[-1], ps[:-1]
    parent = ps[-1] if ps else None
    if isinstance(parent, (cst.If, cst.While, cst.IfExp, cst.Assert)):
        return parent.test is node
    return False


def _resolve_chain(ref: cst.CSTNode, ps: Parents, target: str) -> tuple[cst.CSTNode, Parents, str] | None:
    """``(node, parents, qualified name)`` of ``m.a.b`` when it names either vLLM class."""
    node, i, name = ref, len(ps), target
    while i and isinstance(ps[i - 1], cst.Attribute) and ps[i - 1].value is node:  # type: ignore[attr-defined]
        i -= 1
        node = ps[i]
        name = f"{name}.{node.attr.value}"  # type: ignore[attr-defined]
        if name in OLD_QUALNAMES or name in NEW_QUALNAMES:
            return node, ps[:i], name
    return None


@dataclass(frozen=True)
class _Context:
    fused_ids: set[int]
    #: ids of the functions (or the module) that test for vLLM's FusedMoE.
    fused_tests: set[int]
    #: Classes defined in the module, by name.
    classes: dict[str, cst.ClassDef]
    uses: Uses
    #: ``table[FusedMoE] = handler`` statements: (scope, the table as written) -> its handlers.
    assigned_rows: dict[tuple[int, str], list[cst.BaseExpression]]
    #: ids of the class's expressions that no rename touches (their import stays).
    kept: frozenset[int]
    scopes: Scopes


def _classify(expr: cst.CSTNode, ps: Parents, ctx: _Context) -> Use | None:
    """The held use ``expr`` (the class, with its parents) is part of, if any."""
    parent = ps[-1] if ps else None
    if isinstance(parent, cst.Attribute) and parent.value is expr:
        attr = parent.attr.value
        target = _target_of(parent, ps[:-1])
        if target is not None:
            return Use(PATCH, target, parent, (attr,))
        if attr == "register_oot":
            return Use(REGISTRY, "register-oot", parent)
        if attr in OWN_METHODS:
            return Use(PATCH, "own-method", parent, (attr,))
        return None
    if isinstance(expr, cst.Attribute) and _target_of(expr, ps):
        return Use(PATCH, "replace", expr)
    if isinstance(parent, cst.Arg) and len(ps) > 1 and isinstance(ps[-2], cst.Call):
        call = ps[-2]
        name = callee(call)
        if call.args[0] is parent and name == "super":
            return Use(PATCH, "super", call)
        if call.args[0] is parent and name.rpartition(".")[2] in ("setattr", "delattr"):
            return Use(PATCH, "setattr", call, (name,))
        if call.args[0] is parent and name.endswith(("patch.object", "patch.multiple")):
            return Use(PATCH, "patch-object", call)
        if any(word in name.rpartition(".")[2].lower() for word in ("patch", "register")):
            # `@register_patch("...", SharedFusedMoE)`: whatever it does, it does to the class.
            return Use(PATCH, "patch-call", call, (name,))
    cls = _class_with_base(expr, ps)
    if cls is not None:
        reasons = _subclass_reasons(cls, parent, ctx)
        return Use(SUBCLASS, "subclass", expr, (cls.name.value, *reasons)) if reasons else None
    test = _type_test(expr, ps)
    if test is not None:
        call, at, types = test
        if any(id(t) in ctx.fused_ids for t in types):
            return None  # "any MoE layer?" means the same once the two classes are one
        if _or_with_fused(call, ps[:at], ctx):
            return None  # `isinstance(x, FusedMoE) or isinstance(x, SharedFusedMoE)`: the same
        if _branched_on(call, ps[:at]):
            return Use(ISINSTANCE, "branch", call)
        if id(_function(ps[:at])) in ctx.fused_tests:
            return Use(ISINSTANCE, "with-fused", call)
        return None
    return _table_use(expr, ps, ctx)


def _target_of(node: cst.CSTNode, ps: Parents) -> str | None:
    """``assign`` or ``delete`` when ``node`` is what a statement binds or deletes."""
    parent = ps[-1] if ps else None
    if isinstance(parent, (cst.AssignTarget, cst.AugAssign, cst.AnnAssign)) and parent.target is node:
        return "assign"
    if isinstance(parent, cst.Del) and parent.target is node:
        return "delete"
    return None


def _class_with_base(expr: cst.CSTNode, ps: Parents) -> cst.ClassDef | None:
    if len(ps) > 1 and isinstance(ps[-1], cst.Arg) and isinstance(ps[-2], cst.ClassDef):
        if ps[-1].keyword is None and any(arg is ps[-1] for arg in ps[-2].bases):
            return ps[-2]
    return None


def _subclass_reasons(cls: cst.ClassDef, base: cst.CSTNode, ctx: _Context) -> list[str]:
    """Why renaming the base of ``cls`` is unsafe: ``duplicate:X``/``base:X``, overrides."""
    reasons = []
    for arg in cls.bases:
        if arg is base or arg.keyword is not None:
            continue
        if id(arg.value) in ctx.fused_ids:
            reasons.append(f"duplicate:{source(arg.value)}")
        elif not _is_mixin(arg.value, ctx.classes, set()):
            reasons.append(f"base:{source(arg.value)}")
    defined = set()
    for line in cls.body.body:
        if isinstance(line, cst.FunctionDef):
            if not _passes_through(line):
                defined.add(line.name.value)
        elif isinstance(line, cst.SimpleStatementLine):
            for small in line.body:
                if isinstance(small, cst.Assign):
                    defined.update(t.target.value for t in small.targets if isinstance(t.target, cst.Name))
    return reasons + sorted(defined & OWN_METHODS, reverse=True)


def _passes_through(method: cst.FunctionDef) -> bool:
    """An override that changes nothing the rename could break: ``forward`` only returning
    ``super().forward(...)``; ``__init__`` handing ``**kwargs`` on to ``super().__init__``,
    taking none of the old class's own arguments (what else it does, it does either way)."""
    name = method.name.value
    body = method.body.body if isinstance(method.body, cst.IndentedBlock) else ()
    smalls = [s for line in body if isinstance(line, cst.SimpleStatementLine) for s in line.body]
    if name == "forward":
        return (
            len(body) == 1
            and len(smalls) == 1
            and isinstance(smalls[0], cst.Return)
            and _super_call(smalls[0].value, "forward") is not None
        )
    if name == "__init__":
        params = method.params
        star = params.star_kwarg
        taken = {p.name.value for p in (*params.posonly_params, *params.params, *params.kwonly_params)}
        if star is None or taken & _OLD_ARGUMENTS:
            return False
        for small in smalls:
            call = _super_call(small.value if isinstance(small, cst.Expr) else None, "__init__")
            if call is not None:
                return any(a.star == "**" and isinstance(a.value, cst.Name) and a.value.value == star.name.value for a in call.args)
    return False


#: Constructor arguments that only the removed class took, or that it handled itself.
_OLD_ARGUMENTS = frozenset({"use_overlapped", "shared_experts"})


def _super_call(expr: cst.BaseExpression | None, method: str) -> cst.Call | None:
    """``expr`` when it is ``super().<method>(...)``."""
    if not (isinstance(expr, cst.Call) and isinstance(expr.func, cst.Attribute) and expr.func.attr.value == method):
        return None
    inner = expr.func.value
    if isinstance(inner, cst.Call) and callee(inner) == "super" and not inner.args:
        return expr
    return None


def _is_mixin(base: cst.BaseExpression, classes: dict[str, cst.ClassDef], seen: set[str]) -> bool:
    """A class defined in this module whose bases are only ``object`` or such mixins."""
    if not isinstance(base, cst.Name):
        return False
    if base.value == "object":
        return True
    cls = classes.get(base.value)
    if cls is None or base.value in seen:
        return False
    seen.add(base.value)
    return all(arg.keyword is not None or _is_mixin(arg.value, classes, seen) for arg in cls.bases)


def _type_test(expr: cst.CSTNode, ps: Parents) -> tuple[cst.Call, int, list[cst.CSTNode]] | None:
    """(call, its index in ``ps``, the types it tests) when ``expr`` is a type an isinstance tests."""
    i, types = len(ps), [expr]
    if i > 1 and isinstance(ps[i - 1], cst.Element) and isinstance(ps[i - 2], cst.Tuple):
        types = [e.value for e in ps[i - 2].elements]  # type: ignore[attr-defined]
        i -= 2
    if i > 1 and isinstance(ps[i - 1], cst.Arg) and isinstance(ps[i - 2], cst.Call):
        call = ps[i - 2]
        if callee(call) in ("isinstance", "issubclass") and len(call.args) == 2 and call.args[1] is ps[i - 1]:  # type: ignore[attr-defined]
            return call, i - 2, types  # type: ignore[return-value]
    return None


def _or_with_fused(call: cst.Call, ps: Parents, ctx: _Context) -> bool:
    """``call`` is one side of an ``or`` whose other side tests the same object for FusedMoE."""
    i = len(ps)
    while i and isinstance(ps[i - 1], cst.BooleanOperation) and isinstance(ps[i - 1].operator, cst.Or):
        i -= 1
    chain = ps[i:]  # the `or`s above the call, outermost first
    if not chain:
        return False
    subject = call.args[0].value
    stack: list[cst.CSTNode] = [chain[0]]
    while stack:
        node = stack.pop()
        if isinstance(node, cst.BooleanOperation) and isinstance(node.operator, cst.Or):
            stack += [node.left, node.right]
        elif (
            isinstance(node, cst.Call)
            and node is not call
            and callee(node) == callee(call)
            and len(node.args) == 2
            and node.args[0].value.deep_equals(subject)
            and id(node.args[1].value) in ctx.fused_ids
        ):
            return True
    return False


def _branched_on(node: cst.CSTNode, ps: Parents) -> bool:
    """The answer decides a branch (``if``, ``while``, a conditional, a filter) or is kept."""
    i = len(ps)
    while i and isinstance(ps[i - 1], (cst.BooleanOperation, cst.UnaryOperation)):
        i -= 1
        node = ps[i]
    if not i:
        return False
    parent = ps[i - 1]
    if isinstance(parent, (cst.If, cst.While, cst.IfExp, cst.CompIf)):
        return parent.test is node
    return isinstance(parent, (cst.Assign, cst.AnnAssign, cst.NamedExpr)) and parent.value is node


def _function(ps: Parents) -> cst.CSTNode:
    """The innermost function (or lambda) around a node, or the module."""
    for node in reversed(ps):
        if isinstance(node, (cst.FunctionDef, cst.Lambda)):
            return node
    return ps[0]


def _table_use(expr: cst.CSTNode, ps: Parents, ctx: _Context) -> Use | None:
    """A table row for the class next to one for FusedMoE: removed if same handler, else held.

    A row is an entry of a dict literal, a ``(type, handler)`` pair in a list, tuple or set,
    or a statement ``table[type] = handler``; rows of one table are found by its name within
    the scope :func:`_table_key` gives (a dict literal assigned to a name counts as rows of
    that name). Rows assigned one by one are never removed, only held when handlers differ."""
    if id(expr) in ctx.kept:
        return None
    found = _table_row(expr, ps)
    if found is not None:
        table, row, handler = found
        for other, key, other_handler in _rows(table):
            if other is not row and id(key) in ctx.fused_ids:
                if _same(handler, other_handler):
                    ctx.uses.duplicate_rows.append((table, row))
                    return None
                return Use(REFERENCE, "table", row, (source(other_handler).strip(), source(handler).strip()))
        key = _named_table(table, ps, ctx.scopes)
        for other_handler in ctx.assigned_rows.get(key, ()) if key is not None else ():
            if not _same(handler, other_handler):
                return Use(REFERENCE, "table", row, (source(other_handler).strip(), source(handler).strip()))
        return None
    assigned = _assigned_row(expr, ps, ctx.scopes)
    if assigned is None:
        return None
    statement, table_name, handler = assigned
    for other_handler in ctx.assigned_rows.get(table_name, ()):
        if not _same(handler, other_handler):
            return Use(REFERENCE, "table", statement, (source(other_handler).strip(), source(handler).strip()))
    return None


def _same(a: cst.CSTNode, b: cst.CSTNode) -> bool:
    """The same expression, whitespace aside."""
    return "".join(source(a).split()) == "".join(source(b).split())


def _assigned_row(
    expr: cst.CSTNode, ps: Parents, scopes: Scopes
) -> tuple[cst.Assign, tuple[int, str], cst.BaseExpression] | None:
    """(statement, the table's key (:func:`_table_key`), handler) when ``expr`` is the key in
    ``table[expr] = handler``."""
    if len(ps) < 5 or not isinstance(ps[-1], cst.Index) or ps[-1].value is not expr:
        return None
    subscript, target, statement = ps[-3], ps[-4], ps[-5]
    if not (
        isinstance(subscript, cst.Subscript)
        and len(subscript.slice) == 1
        and isinstance(target, cst.AssignTarget)
        and target.target is subscript
        and isinstance(statement, cst.Assign)
    ):
        return None
    return statement, _table_key(subscript.value, ps, scopes), statement.value


def _named_table(table: cst.CSTNode, ps: Parents, scopes: Scopes) -> tuple[int, str] | None:
    """The key of the name a dict literal is assigned to (``t = {FusedMoE: h}``), if any."""
    at = next((i for i, node in enumerate(ps) if node is table), None)
    statement = ps[at - 1] if at else None
    if isinstance(statement, cst.Assign) and statement.value is table and len(statement.targets) == 1:
        return _table_key(statement.targets[0].target, ps[: at - 1], scopes)
    return None


def _table_key(table: cst.BaseExpression, ps: Parents, scopes: Scopes) -> tuple[int, str]:
    """(scope, the table as written): a function's own local (not a parameter, not declared
    ``global``) is that function's, so two such tables in two functions stay two; any other
    table (a global, an import, a parameter, ``self.x``, which a subclass may fill too) may be
    one dict, so its scope is the module."""
    owner: cst.CSTNode = ps[0]
    scope = scopes.get(table) if isinstance(table, cst.Name) else None
    if scope is not None:
        local = [
            a for a in scope[table.value]  # type: ignore[attr-defined]
            if a.scope.kind == "function" and not isinstance(a.node, cst.Param)
        ]
        owner = local[0].scope.node if local else owner
    return id(owner), "".join(source(table).split())


def _table_row(expr: cst.CSTNode, ps: Parents) -> tuple[cst.CSTNode, cst.CSTNode, cst.CSTNode] | None:
    """(table, row, handler) when ``expr`` is the key of a dict entry or of a (type, handler) pair."""
    if len(ps) > 1 and isinstance(ps[-1], cst.DictElement) and ps[-1].key is expr and isinstance(ps[-2], cst.Dict):
        return ps[-2], ps[-1], ps[-1].value
    if (
        len(ps) > 3
        and isinstance(ps[-1], cst.Element)
        and isinstance(ps[-2], cst.Tuple)
        and len(ps[-2].elements) == 2
        and ps[-2].elements[0] is ps[-1]
        and isinstance(ps[-3], cst.Element)
        and isinstance(ps[-4], (cst.List, cst.Tuple, cst.Set))
    ):
        return ps[-4], ps[-3], ps[-2].elements[1].value
    return None


def _rows(table: cst.CSTNode) -> Iterator[tuple[cst.CSTNode, cst.CSTNode, cst.CSTNode]]:
    for row in table.elements:  # type: ignore[attr-defined]
        if isinstance(row, cst.DictElement):
            yield row, row.key, row.value
        elif isinstance(row, cst.Element) and isinstance(row.value, cst.Tuple) and len(row.value.elements) == 2:
            yield row, row.value.elements[0].value, row.value.elements[1].value


def _defines(cls: cst.ClassDef, name: str) -> bool:
    """Whether the body of ``cls`` defines the method ``name``."""
    body = cls.body.body if isinstance(cls.body, cst.IndentedBlock) else ()
    return any(isinstance(s, cst.FunctionDef) and s.name.value == name for s in body)


def _builds_with_shared_experts(expr: cst.CSTNode, ps: Parents) -> bool:
    """``...FusedMoE(..., shared_experts=...)``, written as the renames (and formatters) write
    it, so that the rule's trigger ``FusedMoE(`` with ``shared_experts=`` is exact: the name
    right before the parenthesis, no space before the ``=``.

    Whatever the value, ``None`` included: ``SharedFusedMoE(shared_experts=None)`` returned
    ``(None, fused_out)`` and is renamed to ``FusedMoE(shared_experts=None)``, which returns
    one tensor, so code that unpacks it is reported before and after the rename alike."""
    call = ps[-1] if ps else None
    if not (isinstance(call, cst.Call) and call.func is expr and _no_space(call.whitespace_after_func)):
        return False
    if not source(expr).endswith("FusedMoE"):
        return False
    return any(
        arg.keyword is not None
        and arg.keyword.value == "shared_experts"
        and isinstance(arg.equal, cst.AssignEqual)
        and _no_space(arg.equal.whitespace_before)
        for arg in call.args
    )


def _no_space(whitespace: cst.BaseParenthesizableWhitespace) -> bool:
    return isinstance(whitespace, cst.SimpleWhitespace) and not whitespace.value


def _record_layer(expr: cst.CSTNode, ps: Parents, uses: Uses, fused: bool = False) -> None:
    """Note ``self.X = expr(...)`` / ``x = expr(...)``: X or x holds a layer built as the class
    (``fused``: as vLLM's ``FusedMoE`` with shared experts)."""
    if len(ps) < 2 or not (isinstance(ps[-1], cst.Call) and ps[-1].func is expr):
        return
    call, holder = ps[-1], ps[-2]
    layers = uses.fused_layers if fused else uses.layers
    if not fused:
        uses.constructions.add(id(call))
    if isinstance(holder, cst.Assign) and holder.value is call:
        targets = [t.target for t in holder.targets]
    elif isinstance(holder, cst.AnnAssign) and holder.value is call:
        targets = [holder.target]
    else:
        return
    for target in targets:
        _hold(target, ps, layers)


def _record_annotated(expr: cst.CSTNode, ps: Parents, uses: Uses) -> None:
    """Note ``X: SharedFusedMoE`` in a class body, ``self.X: SharedFusedMoE = ...`` or a local
    ``x: SharedFusedMoE = ...``: X or x holds a layer of the class. The class itself only, not
    ``Optional[...]``; not a parameter (a patched-in method's ``self: SharedFusedMoE``)."""
    if not (len(ps) > 1 and isinstance(ps[-1], cst.Annotation) and ps[-1].annotation is expr):
        return
    holder = ps[-2]
    if not (isinstance(holder, cst.AnnAssign) and holder.annotation is ps[-1]):
        return
    scope = next((p for p in reversed(ps) if isinstance(p, (cst.ClassDef, cst.FunctionDef))), None)
    if isinstance(scope, cst.ClassDef) and isinstance(holder.target, cst.Name):
        # `experts: SharedFusedMoE` in the class body: what `self.experts` holds.
        uses.annotated_layers.attributes.setdefault(id(scope), set()).add(holder.target.value)
    else:
        _hold(holder.target, ps, uses.annotated_layers)


def _hold(target: cst.BaseExpression, ps: Parents, layers: Layers) -> None:
    """Note that ``target`` (``self.X``, or a local ``x``) holds a layer of this kind."""
    attribute = self_attribute(target)
    if attribute is not None:
        owner = next((p for p in reversed(ps) if isinstance(p, cst.ClassDef)), None)
        if owner is not None:
            layers.attributes.setdefault(id(owner), set()).add(attribute)
    elif isinstance(target, cst.Name):
        layers.names.setdefault(id(_function(ps)), set()).add(target.value)


def self_attribute(node: cst.CSTNode) -> str | None:
    """``X`` of ``self.X``; None for anything else."""
    if isinstance(node, cst.Attribute) and isinstance(node.value, cst.Name) and node.value.value == "self":
        return node.attr.value
    return None


def _fallbacks(
    analysis: Analysis, statements: dict[int, Parents], fused_ids: set[int], file: FileContext
) -> tuple[list[Fallback], frozenset[int]]:
    """The try/if blocks around class imports, and the ids of what goes with the safe ones.

    ``statements`` maps each class binding (its alias id) to the parents of its import.
    """
    blocks: dict[int, tuple[cst.Try | cst.If, set[str]]] = {}
    for binding in analysis.classes:
        ps = statements[id(binding.alias)]
        block = _fallback_block(ps)
        if block is not None:
            entry = blocks.setdefault(id(block), (block, set()))
            if isinstance(block, cst.Try) and any(p is block.body for p in ps):
                entry[1].add(binding.local)
    out, gone = [], set()
    for block, names in blocks.values():
        safe = isinstance(block, cst.Try) and _safe_try(block, names, fused_ids, file)
        out.append(Fallback(block, safe))
        if safe:
            for handler in block.handlers:  # type: ignore[union-attr]
                gone |= _ids_within(handler)
    return out, frozenset(gone)


def _fallback_block(ps: Parents) -> cst.Try | cst.If | None:
    """The ``try`` (or ``if``/``else`` on a condition) an import statement sits in directly."""
    if len(ps) < 3:
        return None
    body, owner = ps[-2], ps[-3]
    if isinstance(owner, cst.Try) and owner.body is body:
        return owner
    if isinstance(owner, cst.ExceptHandler) and len(ps) > 3 and isinstance(ps[-4], cst.Try):
        return ps[-4]
    if isinstance(owner, cst.Else) and len(ps) > 3 and isinstance(ps[-4], cst.If):
        owner = ps[-4]
    if isinstance(owner, cst.If) and owner.orelse is not None:
        # `if TYPE_CHECKING:` is for the type checker, never a fallback.
        if get_full_name_for_node(owner.test) not in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            return owner
    return None


def _safe_try(block: cst.Try, names: set[str], fused_ids: set[int], file: FileContext) -> bool:
    """Only imports in the ``try``; each ``except ImportError`` binds ``names`` to FusedMoE."""
    if block.orelse is not None or block.finalbody is not None or not names:
        return False
    for line in block.body.body:
        if not (isinstance(line, cst.SimpleStatementLine) and all(isinstance(s, (cst.Import, cst.ImportFrom)) for s in line.body)):
            return False
    for handler in block.handlers:
        caught = handler.type
        types = [e.value for e in caught.elements] if isinstance(caught, cst.Tuple) else [caught]
        if caught is None or any(get_full_name_for_node(t) not in _IMPORT_ERRORS for t in types):
            return False
        bound: set[str] = set()
        for line in handler.body.body:
            if not isinstance(line, cst.SimpleStatementLine):
                return False
            for small in line.body:
                binds = _binds_fused_moe(small, fused_ids, file)
                if binds is None:
                    return False
                bound |= binds
        if not names <= bound:
            return False
    return True


def _binds_fused_moe(small: cst.BaseSmallStatement, fused_ids: set[int], file: FileContext) -> set[str] | None:
    """Names ``small`` binds to vLLM's FusedMoE (``X = FusedMoE``, ``import FusedMoE as X``); None: other."""
    if isinstance(small, cst.Assign) and id(small.value) in fused_ids:
        if all(isinstance(t.target, cst.Name) for t in small.targets):
            return {t.target.value for t in small.targets}  # type: ignore[attr-defined]
    if isinstance(small, cst.ImportFrom) and not isinstance(small.names, cst.ImportStar):
        targets = _import_targets(small, file)
        if targets and all(target in NEW_QUALNAMES for _, _, target in targets):
            return {local for _, local, _ in targets}
    return None


class _Ids(cst.CSTVisitor):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[int] = set()

    def on_visit(self, node: cst.CSTNode) -> bool:
        self.ids.add(id(node))
        return True


def _ids_within(node: cst.CSTNode) -> set[int]:
    collector = _Ids()
    node.visit(collector)
    return collector.ids


class ReportsUses(Rule):
    """Base of the findings rules: reports the held uses the shared analysis found for ``ID``.

    Subclasses say what each use means in :meth:`describe`; they may visit more on their own.
    The class's own module and the package ``__init__`` are left to the tree-level removal.
    """

    @classmethod
    def applies_to(cls, file: FileContext) -> bool:
        return not is_removal_target(file)

    def visit_Module(self, node: cst.Module) -> None:
        self.analysis = self.shared(analyse)
        self.uses = self.analysis.uses or Uses()
        for use in self.uses.held:
            if use.rule == self.ID:
                message, fix = self.describe(use)
                self.flag(use.node, message, fix=fix)

    def describe(self, use: Use) -> tuple[str, str]:
        """(message, fix) for one of this rule's uses."""
        raise NotImplementedError


class TracksLayers(ReportsUses):
    """A findings rule that knows, while visiting, which names hold a layer built as the class."""

    def visit_Module(self, node: cst.Module) -> None:
        super().visit_Module(node)
        self._classes: list[cst.ClassDef] = []
        self._functions: list[cst.CSTNode] = [node]

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self._classes.append(node)

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        self._classes.pop()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self._functions.append(node)

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self._functions.pop()

    def is_layer(self, expr: cst.CSTNode, fused: bool = False) -> bool:
        """``self.X`` or ``x`` holds a layer built as the class (or a subclass defined here);
        with ``fused``, one built as vLLM's ``FusedMoE`` with ``shared_experts=``."""
        return self.held_in(self.uses.fused_layers if fused else self.uses.layers, expr)

    def held_in(self, layers: Layers, expr: cst.CSTNode) -> bool:
        """``self.X`` (in the class being visited) or ``x`` (in the function) is in ``layers``."""
        attribute = self_attribute(expr)
        if attribute is not None:
            owner = id(self._classes[-1]) if self._classes else None
            return attribute in layers.attributes.get(owner, ())  # type: ignore[arg-type]
        if isinstance(expr, cst.Name):
            return expr.value in layers.names.get(id(self._functions[-1]), ())
        return False

    def in_subclass(self, fused: bool = False) -> bool:
        """Visiting the body of a class defined here that derives from the class (``fused``:
        from vLLM's ``FusedMoE``)."""
        classes = self.uses.fused_subclasses if fused else self.uses.subclasses
        return bool(self._classes) and any(c is self._classes[-1] for c in classes.values())
