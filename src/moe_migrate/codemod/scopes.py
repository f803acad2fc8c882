"""Which binding each name reads: scopes, assignments and their references, in one fast walk.

The rules ask few questions of a module's scopes (what does this import bind, which names
read it, what is ``FusedMoE`` bound to here), but LibCST's ``ScopeProvider`` answers every
question about every name, in two passes that rebuild the tree: it was about 40% of the time
spent on a file. This module keeps its model and its answers (the rule tests and the vLLM
tree hold the two to the same results) and computes them in one read-only walk
(:mod:`codemod.walk`):

- scopes: the module, each class, each function and lambda, each comprehension;
- assignments, numbered in order within their scope: imports (``import a.b`` binds ``a``,
  ``a.b``), ``def``/``class`` names, parameters, and every name stored to;
  ``global``/``nonlocal`` send a function's assignments to the scope they name;
- references: every name read, attached to the assignments it can see. A reference
  ``a.b.C`` reads the longest dotted prefix that is bound (``a.b`` after ``import a.b``);
  a name inside a string annotation is a reference whose node is the string. As in LibCST,
  a reference reads only the assignments of its own scope made before it; earlier ones go to
  the enclosing scope's.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Iterator, Optional

import libcst as cst
from libcst.helpers import get_full_name_for_node

from moe_migrate.codemod.walk import children

if TYPE_CHECKING:
    from libcst.metadata import MetadataWrapper


@dataclass(eq=False)
class Access:
    """One read of a name: ``node`` is the ``Name``, the ``Attribute`` of a dotted import, or
    the string of a string annotation."""

    node: cst.CSTNode
    scope: "Scope"
    index: int


@dataclass(eq=False)
class Assignment:
    """One binding of ``name`` in ``scope`` by ``node`` (a ``Name``, ``Param``, ``def``, ``class``)."""

    name: str
    scope: "Scope"
    node: cst.CSTNode
    index: int
    _references: set[Access] = field(default_factory=set)

    @property
    def references(self) -> set[Access]:
        return self._references

    def _record(self, accesses: set[Access]) -> None:
        later = {a for a in accesses if a.scope is not self.scope or self.index < a.index}
        self._references |= later
        earlier = accesses - later
        if earlier and self.scope.parent is not None:
            for shadowed in self.scope.parent[self.name]:
                shadowed._record(earlier)


@dataclass(eq=False)
class ImportAssignment(Assignment):
    """A binding by an ``import`` statement: ``node`` is the statement."""


class Scope:
    """A module, class, function or comprehension scope."""

    def __init__(self, kind: str, node: cst.CSTNode, parent: "Scope | None") -> None:
        self.kind = kind
        self.node = node
        self.parent = parent
        self.count = 0
        self._assignments: dict[str, list[Assignment]] = defaultdict(list)
        #: Names declared ``global``/``nonlocal`` here, and the scope they belong to.
        self._overwrites: dict[str, Scope] = {}

    @property
    def assignments(self) -> Iterator[Assignment]:
        for found in self._assignments.values():
            yield from found

    def _visible_parent(self) -> "Scope | None":
        """The enclosing scope whose names this one sees (functions do not see class scopes)."""
        parent = self.parent
        if self.kind == "class":
            return parent
        while parent is not None and parent.kind == "class":
            parent = parent.parent
        return parent

    def _target(self, name: str) -> "Scope":
        return self._overwrites.get(name, self)

    def __getitem__(self, name: str) -> list[Assignment]:
        """The assignments of ``name`` visible here (its own, else the enclosing scope's)."""
        if name in self._overwrites:
            return self._overwrites[name][name]
        if self._assignments.get(name):
            return list(self._assignments[name])
        parent = self._visible_parent()
        return parent[name] if parent is not None else []

    def __contains__(self, name: str) -> bool:
        return bool(self[name])

    def _add(self, assignment: type[Assignment], name: str, node: cst.CSTNode) -> None:
        target = self._target(name)
        target._assignments[name].append(assignment(name, target, node, target.count))

    def _global(self) -> "Scope":
        scope = self
        while scope.parent is not None:
            scope = scope.parent
        return scope

    def _enclosing_function(self) -> "Scope":
        scope = self._visible_parent()
        while scope is not None and scope.kind not in ("function", "module"):
            scope = scope._visible_parent()
        return scope or self._global()


@dataclass
class Scopes:
    """The analysis of one module: every scope, and the scope of every node walked."""

    scopes: list[Scope]
    of_node: dict[int, Scope]

    def get(self, node: cst.CSTNode) -> Optional[Scope]:
        return self.of_node.get(id(node))


def analyse(wrapper: "MetadataWrapper") -> Scopes:
    """The scopes of ``wrapper.module`` (the rules read them from ``rules._vllm.analyse``)."""
    walker = _Walker(wrapper.module)
    walker.walk()
    walker.resolve()
    return Scopes(walker.scopes, walker.of_node)


_COMPREHENSIONS = (cst.ListComp, cst.SetComp, cst.DictComp, cst.GeneratorExp)
_STRINGS = (cst.SimpleString, cst.ConcatenatedString)


@dataclass
class _Deferred:
    access: Access
    name: str
    #: The outermost attribute chain the name heads, when it heads one.
    chain: cst.Attribute | None
    #: Dotted names a string annotation's chain spells, longest first.
    dotted: tuple[str, ...] = ()


class _Walker:
    def __init__(self, module: cst.Module) -> None:
        self.module_ = module
        self.scope = Scope("module", module, None)
        self.scopes: list[Scope] = [self.scope]
        self.of_node: dict[int, Scope] = {}
        self.deferred: list[_Deferred] = []
        self.chain: cst.Attribute | None = None
        self.annotation = 0  # inside an ``Annotation`` node
        self.type_hint = [False]  # inside ``typing.X[...]``
        self.literal = 0  # inside ``Literal[...]``

    # Scopes ----------------------------------------------------------------------------------

    def enter(self, kind: str, node: cst.CSTNode) -> Scope:
        scope = Scope(kind, node, self.scope)
        self.scopes.append(scope)
        self.scope = scope
        return scope

    def walk(self) -> None:
        for statement in self.module_.body:
            self.visit(statement)

    # The walk --------------------------------------------------------------------------------

    def visit(self, node: cst.CSTNode, store: bool = False) -> None:
        handler = _HANDLERS.get(type(node))
        if handler is not None:
            handler(self, node, store)
        else:
            for child in children(node):
                self.visit(child)
        self.of_node[id(node)] = self.scope
        if isinstance(node, _ASSIGNMENT_LIKE):
            self.scope.count += 1

    def visit_all(self, nodes: Iterable[cst.CSTNode | None], store: bool = False) -> None:
        for node in nodes:
            if node is not None:
                self.visit(node, store)

    def name(self, node: cst.Name, store: bool) -> None:
        if store:
            self.scope._add(Assignment, node.value, node)
            return
        access = Access(node, self.scope, self.scope.count)
        self.deferred.append(_Deferred(access, node.value, self.chain))

    def attribute(self, node: cst.Attribute, store: bool) -> None:
        outer = self.chain
        if outer is None:
            self.chain = node
        self.visit(node.value)
        self.chain = outer

    def call(self, node: cst.Call, store: bool) -> None:
        outer, self.chain = self.chain, None
        self.type_hint.append(False)
        qualified = self.qualified(node.func)
        self.visit(node.func)
        if qualified & {"typing.NewType", "typing.TypeVar"}:
            self.type_hint[-1] = True  # the first argument, the new type's name, is not read
            self.visit_all(arg.value for arg in node.args[1:])
        elif "typing.cast" in qualified and node.args:
            self.type_hint[-1] = True
            self.visit(node.args[0].value)
            self.type_hint[-1] = False
            self.visit_all(arg.value for arg in node.args[1:])
        else:
            self.visit_all(arg.value for arg in node.args)
        self.type_hint.pop()
        self.chain = outer

    def subscript(self, node: cst.Subscript, store: bool) -> None:
        qualified = self.qualified(node.value) if isinstance(node.value, cst.Name) else set()
        literal = bool(qualified & {"typing.Literal", "typing_extensions.Literal"})
        self.type_hint.append(any(q.startswith(("typing.", "typing_extensions.")) for q in qualified))
        self.literal += literal
        self.visit(node.value)  # a subscript does not cut the attribute chain around it
        self.visit_all(node.slice)
        self.literal -= literal
        self.type_hint.pop()

    def annotation_(self, node: cst.Annotation, store: bool) -> None:
        self.annotation += 1
        self.visit(node.annotation)
        self.annotation -= 1

    def string_(self, node: cst.CSTNode, store: bool) -> None:
        if not (self.annotation or self.type_hint[-1]) or self.literal:
            if isinstance(node, cst.ConcatenatedString):
                self.visit_all(children(node))
            return
        value = node.evaluated_value  # type: ignore[attr-defined]
        if not isinstance(value, str) or not value:
            if isinstance(node, cst.ConcatenatedString):
                self.visit_all(children(node))
            return
        try:
            parsed = ast.parse(value)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return  # as in CPython, a string annotation that does not parse reads nothing
        for name, dotted in _names_in(parsed):
            access = Access(node, self.scope, self.scope.count)
            self.deferred.append(_Deferred(access, name, None, dotted))

    def import_(self, node: cst.Import | cst.ImportFrom, store: bool) -> None:
        if isinstance(node.names, cst.ImportStar):
            return
        for alias in node.names:
            target = alias.asname.name if alias.asname is not None else alias.name
            for dotted in _dotted(target):
                self.scope._add(ImportAssignment, dotted, node)

    def function(self, node: cst.FunctionDef, store: bool) -> None:
        self.scope._add(Assignment, node.name.value, node)
        outer = self.scope
        self.type_parameters(node)
        around = self.scope
        self.enter("function", node)
        self.visit(node.params)
        self.visit(node.body)
        self.scope = around
        self.visit_all(d.decorator for d in node.decorators)
        if node.returns is not None:
            self.visit(node.returns)
        self.scope = outer

    def type_parameters(self, node: cst.CSTNode) -> None:
        """``def f[T]()``, ``class C[T]``: the parameters get a scope of their own (PEP 695)."""
        parameters = getattr(node, "type_parameters", None)
        if parameters is not None:
            self.enter("annotation", node)
            self.visit(parameters)

    def type_alias(self, node: cst.CSTNode, store: bool) -> None:
        self.scope._add(Assignment, node.name.value, node)  # type: ignore[attr-defined]
        outer = self.scope
        self.enter("annotation", node)
        if node.type_parameters is not None:  # type: ignore[attr-defined]
            self.visit(node.type_parameters)  # type: ignore[attr-defined]
        self.visit(node.value)  # type: ignore[attr-defined]
        self.scope = outer

    def type_variable(self, node: cst.CSTNode, store: bool) -> None:
        self.scope._add(Assignment, node.name.value, node)  # type: ignore[attr-defined]
        bound = getattr(node, "bound", None)
        if bound is not None:
            self.visit(bound)

    def lambda_(self, node: cst.Lambda, store: bool) -> None:
        outer = self.scope
        self.enter("function", node)
        self.visit(node.params)
        self.visit(node.body)
        self.scope = outer

    def param(self, node: cst.Param, store: bool) -> None:
        self.scope._add(Assignment, node.name.value, node)
        inner = self.scope
        self.scope = inner.parent or inner
        self.visit_all((node.default, node.annotation))
        self.scope = inner

    def arg(self, node: cst.Arg, store: bool) -> None:
        self.visit(node.value)  # the keyword is neither read nor bound

    def class_(self, node: cst.ClassDef, store: bool) -> None:
        self.scope._add(Assignment, node.name.value, node)
        self.visit_all(d.decorator for d in node.decorators)
        outer = self.scope
        self.type_parameters(node)
        self.visit_all(arg.value for arg in node.bases)
        self.visit_all(arg.value for arg in node.keywords)
        self.enter("class", node)
        self.visit_all(node.body.body)
        self.scope = outer

    def global_(self, node: cst.Global | cst.Nonlocal, store: bool) -> None:
        owner = self.scope._global() if isinstance(node, cst.Global) else self.scope._enclosing_function()
        for item in node.names:
            self.scope._overwrites[item.name.value] = owner

    def comprehension(self, node: cst.CSTNode, store: bool) -> None:
        for_in: cst.CompFor = node.for_in  # type: ignore[attr-defined]
        self.visit(for_in.iter)
        outer = self.scope
        self.enter("comprehension", node)
        self.comp_for(for_in, first=True)
        if isinstance(node, cst.DictComp):
            self.visit_all((node.key, node.value))
        else:
            self.visit(node.elt)  # type: ignore[attr-defined]
        self.scope = outer

    def comp_for(self, node: cst.CompFor, first: bool = False) -> None:
        """As LibCST numbers them: the first ``for``'s target comes before its conditions, an
        inner ``for``'s target, iterable and conditions share one number."""
        if first:
            self.visit(node.target, store=True)
            self.scope.count += 1
        else:
            self.visit(node.target, store=True)
            self.visit(node.iter)
        self.visit_all(condition.test for condition in node.ifs)
        if node.inner_for_in is not None:
            self.comp_for(node.inner_for_in)
        self.of_node[id(node)] = self.scope
        if not first:
            self.scope.count += 1

    def for_(self, node: cst.For, store: bool) -> None:
        self.visit(node.target, store=True)
        self.scope.count += 1
        self.visit_all((node.iter, node.body, node.orelse))

    def assign(self, node: cst.Assign, store: bool) -> None:
        for target in node.targets:
            self.visit(target.target, store=True)
        self.visit(node.value)

    def ann_assign(self, node: cst.AnnAssign, store: bool) -> None:
        self.visit(node.target, store=True)
        self.visit(node.annotation)
        if node.value is not None:
            self.visit(node.value)

    def aug_assign(self, node: cst.AugAssign, store: bool) -> None:
        self.visit(node.target, store=True)
        self.visit(node.value)

    def named_expr(self, node: cst.NamedExpr, store: bool) -> None:
        self.visit(node.target, store=True)
        self.visit(node.value)

    def as_name(self, node: cst.AsName, store: bool) -> None:
        self.visit(node.name, store=True)

    def sequence(self, node: cst.CSTNode, store: bool) -> None:
        for element in node.elements:  # type: ignore[attr-defined]
            self.visit(element.value if store and isinstance(element, (cst.Element, cst.StarredElement)) else element, store)

    def starred(self, node: cst.StarredElement, store: bool) -> None:
        self.visit(node.value, store)

    # Resolution ------------------------------------------------------------------------------

    def qualified(self, node: cst.CSTNode) -> set[str]:
        """What ``node`` (a name or a dotted name) is imported as, from the assignments so far."""
        full = get_full_name_for_node(node)
        if full is None:
            return set()
        head, _, rest = full.partition(".")
        out = set()
        for assignment in self.scope[head]:
            if not isinstance(assignment, ImportAssignment):
                continue
            statement = assignment.node
            for alias in statement.names:  # type: ignore[union-attr]
                local = alias.evaluated_alias or get_full_name_for_node(alias.name)
                imported = get_full_name_for_node(alias.name) or ""
                if isinstance(statement, cst.ImportFrom):
                    if local != head or statement.relative or statement.module is None:
                        continue
                    source = f"{get_full_name_for_node(statement.module)}.{imported}"
                elif alias.asname is not None and local == head:
                    source = imported
                elif alias.asname is None and imported.split(".")[0] == head:
                    source = head
                else:
                    continue
                out.add(f"{source}.{rest}" if rest else source)
        return out

    def resolve(self) -> None:
        by_scope: dict[tuple[Scope, str], set[Access]] = defaultdict(set)
        for deferred in self.deferred:
            access, name = deferred.access, deferred.name
            if deferred.chain is not None:
                for dotted, node in _dotted_nodes(deferred.chain):
                    if dotted in access.scope:
                        access.node, name = node, dotted
                        break
            for dotted in deferred.dotted:
                if dotted in access.scope:
                    name = dotted
                    break
            by_scope[(access.scope, name)].add(access)
        for (scope, name), accesses in by_scope.items():
            for assignment in scope[name]:
                assignment._record(accesses)
        self.deferred = []


def _dotted(node: cst.CSTNode) -> Iterator[str]:
    """``a.b.c`` -> ``a.b.c``, ``a.b``, ``a``."""
    for dotted, _ in _dotted_nodes(node):
        yield dotted


def _dotted_nodes(node: cst.CSTNode) -> Iterator[tuple[str, cst.CSTNode]]:
    """(dotted name, node) of ``node`` and each prefix of it, longest first; a call in the
    chain cuts it (``a.b().c`` -> ``a.b``, ``a``)."""
    if isinstance(node, cst.Name):
        yield node.value, node
        return
    if not isinstance(node, cst.Attribute):
        return
    value = node.value
    if isinstance(value, cst.Call):
        yield from _dotted_nodes(value.func) if isinstance(value.func, (cst.Attribute, cst.Name)) else ()
        return
    inner = list(_dotted_nodes(value))
    if inner:
        yield f"{inner[0][0]}.{node.attr.value}", node
        yield from inner


def _names_in(tree: ast.AST) -> Iterator[tuple[str, tuple[str, ...]]]:
    """(name, dotted names of the chain it heads, longest first) for each name a parsed string
    annotation reads."""
    heads: dict[int, tuple[str, ...]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in heads:
            parts, inner = [node.attr], node.value
            chain_nodes = [node]
            while isinstance(inner, ast.Attribute):
                parts.append(inner.attr)
                chain_nodes.append(inner)
                inner = inner.value
            if isinstance(inner, ast.Name):
                names = [inner.id]
                for part in reversed(parts):
                    names.append(f"{names[-1]}.{part}")
                heads[id(inner)] = tuple(reversed(names))
            for n in chain_nodes:
                heads.setdefault(id(n), ())
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            yield node.id, heads.get(id(node), ())


_ASSIGNMENT_LIKE = (
    cst.AnnAssign, cst.AsName, cst.Assign, cst.AugAssign, cst.ClassDef, cst.CompFor, cst.FunctionDef,
    cst.Global, cst.Import, cst.ImportFrom, cst.NamedExpr, cst.Nonlocal, cst.Parameters, cst.WithItem,
    cst.TypeVar, cst.TypeAlias, cst.TypeVarTuple, cst.ParamSpec,
)

_HANDLERS = {
    cst.Name: _Walker.name,
    cst.Attribute: _Walker.attribute,
    cst.Call: _Walker.call,
    cst.Subscript: _Walker.subscript,
    cst.Annotation: _Walker.annotation_,
    cst.SimpleString: _Walker.string_,
    cst.ConcatenatedString: _Walker.string_,
    cst.Import: _Walker.import_,
    cst.ImportFrom: _Walker.import_,
    cst.FunctionDef: _Walker.function,
    cst.Lambda: _Walker.lambda_,
    cst.Param: _Walker.param,
    cst.Arg: _Walker.arg,
    cst.ClassDef: _Walker.class_,
    cst.Global: _Walker.global_,
    cst.Nonlocal: _Walker.global_,
    cst.ListComp: _Walker.comprehension,
    cst.SetComp: _Walker.comprehension,
    cst.DictComp: _Walker.comprehension,
    cst.GeneratorExp: _Walker.comprehension,
    cst.For: _Walker.for_,
    cst.Assign: _Walker.assign,
    cst.AnnAssign: _Walker.ann_assign,
    cst.AugAssign: _Walker.aug_assign,
    cst.NamedExpr: _Walker.named_expr,
    cst.AsName: _Walker.as_name,
    cst.Tuple: _Walker.sequence,
    cst.List: _Walker.sequence,
    cst.StarredElement: _Walker.starred,
    cst.TypeAlias: _Walker.type_alias,
    cst.TypeVar: _Walker.type_variable,
    cst.TypeVarTuple: _Walker.type_variable,
    cst.ParamSpec: _Walker.type_variable,
}
