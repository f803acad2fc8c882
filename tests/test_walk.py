"""The engine reads trees without rebuilding them (``codemod.walk``) and places findings by
generating one statement (``FileState.position``); both must agree with LibCST exactly."""

from __future__ import annotations

from pathlib import Path

import libcst as cst
import pytest
from libcst.metadata import MetadataWrapper, ParentNodeProvider, PositionProvider

from conftest import FIXTURES
from moe_migrate.codemod.context import FileContext
from moe_migrate.codemod.rule import FileState
from moe_migrate.codemod.walk import children, visit_batched


class Recorder(cst.BatchableCSTVisitor):
    """Writes down every callback it gets, for the node types the rules visit."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, int]] = []

    def _note(self, event: str, node: cst.CSTNode) -> None:
        self.events.append((event, id(node)))

    def visit_Module(self, node: cst.Module) -> None:
        self._note("visit Module", node)

    def leave_Module(self, original_node: cst.Module) -> None:
        self._note("leave Module", original_node)

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self._note("visit ClassDef", node)

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        self._note("leave ClassDef", original_node)

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self._note("visit FunctionDef", node)

    def visit_Name(self, node: cst.Name) -> None:
        self._note("visit Name", node)

    def visit_Attribute(self, node: cst.Attribute) -> None:
        self._note("visit Attribute", node)

    def leave_Assign(self, original_node: cst.Assign) -> None:
        self._note("leave Assign", original_node)

    def visit_If(self, node: cst.If) -> None:
        self._note("visit If", node)

    def leave_If_body(self, node: cst.If) -> None:
        self._note("leave If.body", node)

    def visit_Comment(self, node: cst.Comment) -> None:
        self._note("visit Comment", node)

    def visit_SimpleString(self, node: cst.SimpleString) -> None:
        self._note("visit SimpleString", node)

    def visit_Call(self, node: cst.Call) -> None:
        self._note("visit Call", node)

    def visit_Subscript(self, node: cst.Subscript) -> None:
        self._note("visit Subscript", node)


def _modules() -> list[tuple[Path, bytes, cst.Module]]:
    out = []
    for path in sorted(FIXTURES.rglob("*.py")):
        source = path.read_bytes()
        try:
            out.append((path, source, cst.parse_module(source)))
        except Exception:  # noqa: BLE001 - unparsable fixtures are about other things
            continue
    assert len(out) > 100
    return out


MODULES = _modules()


@pytest.mark.parametrize("path,source,module", MODULES, ids=[str(p.relative_to(FIXTURES)) for p, _, _ in MODULES])
def test_the_walk_and_the_positions_agree_with_libcst(path: Path, source: bytes, module: cst.Module) -> None:
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    theirs, ours = Recorder(), Recorder()
    wrapper.visit_batched([theirs])
    parents = visit_batched(module, [ours])
    assert ours.events == theirs.events

    their_parents = wrapper.resolve(ParentNodeProvider)
    positions = wrapper.resolve(PositionProvider)
    state = FileState(FileContext(path.name), wrapper, text=source, parents=parents)
    for node, parent in their_parents.items():
        assert parents[id(node)] is parent
        if node in positions:
            p = positions[node]
            expected = (p.start.line, p.start.column + 1, p.end.line, p.end.column + 1)
            assert state.position(node) == expected, (type(node).__name__, expected)


def test_children_skip_only_whitespace_and_punctuation() -> None:
    module = cst.parse_module("x = f(a, *b, k=c)[d]  # note\nclass C(B, metaclass=M):\n    y: 'T' = lambda z=e: z\n")
    names = set()

    def walk(node: cst.CSTNode) -> None:
        if isinstance(node, cst.Name):
            names.add(node.value)
        for child in children(node):
            walk(child)

    walk(module)
    assert names == {"x", "f", "a", "b", "k", "c", "d", "C", "B", "metaclass", "M", "y", "z", "e"}
