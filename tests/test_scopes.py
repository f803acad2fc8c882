"""``codemod.scopes`` gives the answers LibCST's ``ScopeProvider`` gives, in one fast walk.

The rules read scopes, assignments and references; these tests compare all three with
LibCST's on snippets that exercise each scoping rule, and on every fixture file.
"""

from __future__ import annotations

import libcst as cst
import pytest
from libcst.metadata import ImportAssignment as CstImport
from libcst.metadata import MetadataWrapper, ScopeProvider

from conftest import FIXTURES
from moe_migrate.codemod import scopes

SNIPPETS = {
    "imports": "import a.b.c\nimport d as e\nfrom f import g, h as i\nfrom . import j\nx = a.b.c.D + a.b.X + e.y + g + i\n",
    "dotted-through-call": "import a.b\na.b().c\na.b.c().d\nfoo[a.b.c].x\n",
    "function-and-class": (
        "X = 1\n"
        "class C(X):\n"
        "    X = 2\n"
        "    y = X\n"
        "    def f(self, z=X) -> X:\n"
        "        return X + z\n"
        "    g = lambda self, w=X: X + w\n"
    ),
    "global-and-nonlocal": (
        "n = 0\n"
        "def f():\n"
        "    global n\n"
        "    n = 1\n"
        "    m = 2\n"
        "    def g():\n"
        "        nonlocal m\n"
        "        m = 3\n"
        "        return n + m\n"
        "    return g\n"
    ),
    "comprehensions": (
        "xs = [1]\n"
        "a = [y for x in xs for y in x if y]\n"
        "b = {k: v for k, v in xs}\n"
        "c = (z for z in xs)\n"
        "class K:\n"
        "    xs = [2]\n"
        "    d = [x for x in xs]\n"
    ),
    "read-before-assignment": "def f():\n    print(v)\n    v = 1\n    return v\nv = 0\nprint(v)\nv = 2\n",
    "targets": (
        "(a, [b, *c]) = d = e, f = 1, 2\n"
        "g.h = i[j] = 3\n"
        "for k, l in m:\n    pass\n"
        "with n as o, p as (q, r):\n    pass\n"
        "try:\n    pass\nexcept s as t:\n    pass\n"
        "if (u := v):\n    del u\n"
        "w += 1\nx: int = 1\ny: int\n"
    ),
    "annotations": (
        "from typing import Optional, Literal, cast, TypeVar\n"
        "import m.n\n"
        "A = 1\n"
        "def f(x: 'A', y: Optional['A'], z: Literal['A'], w: 'm.n.B') -> 'list[A]':\n"
        "    v: 'A' = cast('A', x)\n"
        "    T = TypeVar('T', bound='A')\n"
        "    u = Optional['A']\n"
        "    s = 'A'\n"
        "    r: 'not valid python (' = 1\n"
        "    return x\n"
    ),
    "keywords-and-attributes": "def f(a): pass\nb = 1\nf(a=b)\nb.a\nclass C(metaclass=b): pass\n",
    "decorators": "import d\n@d.e\n@d\ndef f(): pass\n@d\nclass C: pass\n",
    "fstrings-and-strings": "x = 1\ny = f'{x} {x!r:>{x}}'\nz = 'x' 'y'\n",
}


def _signature(assignment) -> tuple[str, str, int]:
    kind = "import" if isinstance(assignment, (CstImport, scopes.ImportAssignment)) else "name"
    return (assignment.name, kind, id(assignment.node))


def _compare(source: str) -> None:
    module = cst.parse_module(source)
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    theirs = {
        (id(getattr(s, "node", module)), type(s).__name__.removesuffix("Scope").lower()): s
        for s in wrapper.resolve(ScopeProvider).values()
        if s is not None
    }
    kinds = {"module": "global"}
    ours = {(id(s.node), kinds.get(s.kind, s.kind)): s for s in scopes.analyse(wrapper).scopes}
    assert set(ours) == set(theirs)
    for key, their_scope in theirs.items():
        our_scope = ours[key]
        their = {_signature(a): {id(r.node) for r in a.references} for a in their_scope.assignments}
        our = {_signature(a): {id(r.node) for r in a.references} for a in our_scope.assignments}
        assert our == their, type(our_scope.node).__name__
        for name in {a.name for a in their_scope.assignments} | {"a", "X", "n", "m", "v"}:
            assert {_signature(a) for a in our_scope[name]} == {
                _signature(a) for a in their_scope[name] if type(a).__name__ != "BuiltinAssignment"
            }, name


@pytest.mark.parametrize("name", sorted(SNIPPETS))
def test_agrees_with_libcst_on(name: str) -> None:
    _compare(SNIPPETS[name])


def test_agrees_with_libcst_on_every_fixture() -> None:
    compared = 0
    for path in sorted(FIXTURES.rglob("*.py")):
        try:
            source = path.read_bytes().decode("utf-8")
            cst.parse_module(source)
        except Exception:  # noqa: BLE001 - fixtures of broken files are not about scopes
            continue
        _compare(source)
        compared += 1
    assert compared > 100


def test_the_scope_of_a_node() -> None:
    module = cst.parse_module("x = 1\ndef f():\n    return x == 'FusedMoE'\n")
    analysis = scopes.analyse(MetadataWrapper(module, unsafe_skip_copy=True))
    function = module.body[1]
    comparison = function.body.body[0].body[0].value
    assert analysis.get(comparison).node is function
    assert analysis.get(module.body[0]).node is module
