"""The base class of every rule, and the examples that are a rule's tests and its docs.

A rule is a read-only LibCST visitor. All selected rules share one traversal of one parsed
module (``MetadataWrapper.visit_batched``); a rule never mutates the tree, it *schedules* edits
(:meth:`Rule.replace`, :meth:`Rule.remove`) and reports findings (:meth:`Rule.flag`). The engine
applies the edits afterwards in a single transform, innermost first, so an edit on a parent sees
its children already edited. A rule never prints, writes files or exits.

Rules are handed to the engine as classes; the engine makes a fresh instance per file.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable, ClassVar, Iterator, Sequence, TypeVar, Union

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from moe_migrate.codemod.context import FileContext
from moe_migrate.codemod.outcomes import Finding, Severity

T = TypeVar("T")
Edit = Callable[[cst.CSTNode], Union[cst.CSTNode, cst.RemovalSentinel, cst.FlattenSentinel]]


@dataclass(frozen=True)
class Rewrite:
    """An example the rule must rewrite from ``before`` to exactly ``after``."""

    before: str
    after: str
    #: One phrase naming the situation; shown by ``--explain`` and used as the test id.
    note: str = ""
    #: The module the example is a file of (some rules act only on particular modules).
    module: str = "example"
    is_package: bool = False


@dataclass(frozen=True)
class Unchanged:
    """A look-alike the rule must leave byte-for-byte alone, with no finding."""

    source: str
    note: str = ""
    module: str = "example"
    is_package: bool = False


@dataclass(frozen=True)
class Flagged:
    """An example the rule must report: a finding on each of ``lines``.

    ``after`` is the expected source (``None``: left exactly as it was).
    """

    source: str
    lines: tuple[int, ...]
    after: str | None = None
    note: str = ""
    module: str = "example"
    is_package: bool = False


Example = Union[Rewrite, Unchanged, Flagged]


@dataclass
class FileState:
    """Everything the engine keeps for one file during one pass (never crosses processes)."""

    context: FileContext
    wrapper: "MetadataWrapper"
    #: id(node) -> (node, [(rule id, edit), ...]); the node is kept so its id stays valid.
    edits: dict[int, tuple[cst.CSTNode, list[tuple[str, Edit]]]] = field(default_factory=dict)
    #: (node, finding without its position): positions are resolved once the walk is done.
    flagged: list[tuple[cst.CSTNode, Finding]] = field(default_factory=list)
    memo: dict[Callable[..., object], object] = field(default_factory=dict)
    #: ``from M import name [as asname]`` the edits need; added after the edits are applied.
    imports: list[tuple[str, str, str | None]] = field(default_factory=list)
    #: The text LibCST parsed (the file, or a slice of it).
    text: bytes = b""
    #: Python's parse of ``text``, where the engine has it already (the whole file).
    syntax: ast.Module | None = None
    #: Maps a line of the parsed text to the file's line, when LibCST parsed a slice of it.
    lines: Callable[[int], int] | None = None
    #: id(node) -> its parent, for every node of the module (filled by the rules' traversal).
    parents: dict[int, cst.CSTNode] = field(default_factory=dict)
    _positions: dict[int, object] = field(default_factory=dict)
    _starts: dict[int, int] | None = None

    @property
    def findings(self) -> list[Finding]:
        """The findings, each placed at its node (call once the walk is done)."""
        out = []
        for node, finding in self.flagged:
            line, column, end_line, end_column = self.position(node)
            out.append(replace(finding, line=line, column=column, end_line=end_line, end_column=end_column))
        return out

    def position(self, node: cst.CSTNode) -> tuple[int, int, int, int]:
        """1-based (line, column, end_line, end_column) of ``node`` in the file.

        Positions cost a code-generation pass, so only the statement around the node is
        generated (a top-level statement, or one member of a top-level class, printed with
        its class header): Python's parser says on which line that statement starts. A node
        outside any statement falls back to the whole module.
        """
        printed, statement, line = self._around(node)
        key = id(statement)
        if key not in self._positions:
            self._positions[key] = MetadataWrapper(printed, unsafe_skip_copy=True).resolve(PositionProvider)
        positions = self._positions[key]
        offset = line - positions[statement].start.line if line else 0  # type: ignore[index]
        r = positions[node]  # type: ignore[index]
        start, end = r.start.line + offset, r.end.line + offset
        if self.lines is not None:
            start, end = self.lines(start), self.lines(end)
        return (start, r.start.column + 1, end, r.end.column + 1)

    def _around(self, node: cst.CSTNode) -> tuple[cst.Module, cst.CSTNode, int]:
        """(module to print, the statement holding ``node`` in it, that statement's line in
        the parsed text); the whole module with line 0 where no statement holds the node."""
        module = self.wrapper.module
        chain = [node]
        while chain[-1] is not module and id(chain[-1]) in self.parents:
            chain.append(self.parents[id(chain[-1])])
        lines = self._statement_lines()
        if chain[-1] is not module or len(chain) < 2 or id(chain[-2]) not in lines:
            return module, module, 0
        top = chain[-2]
        alone = module.with_changes(body=(top,), header=(), footer=())
        if isinstance(top, cst.ClassDef) and len(chain) >= 5 and chain[-3] is top.body:
            member = chain[-4]
            if id(member) in lines:
                body = top.body.with_changes(body=(member,))
                return alone.with_changes(body=(top.with_changes(body=body),)), member, lines[id(member)]
        return alone, top, lines[id(top)]

    def _statement_lines(self) -> dict[int, int]:
        """id(statement) -> the line its first token is on (after decorators), from Python's
        parser, for the top-level statements and the members of top-level classes."""
        if self._starts is None:
            self._starts = {}
            try:
                tree = self.syntax or ast.parse(self.text)
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                return self._starts
            for statement, first in _pair(self.wrapper.module.body, tree.body):
                self._starts[id(statement)] = first.lineno
                if isinstance(statement, cst.ClassDef) and isinstance(first, ast.ClassDef):
                    if isinstance(statement.body, cst.IndentedBlock):
                        for member, ast_member in _pair(statement.body.body, first.body):
                            self._starts[id(member)] = ast_member.lineno
        return self._starts


def _pair(body: Sequence[cst.BaseStatement], statements: list[ast.stmt]) -> Iterator[tuple[cst.CSTNode, ast.stmt]]:
    """Each LibCST statement with the first ``ast`` statement it holds (``a; b`` is one line)."""
    index = 0
    for statement in body:
        if index >= len(statements):
            return
        yield statement, statements[index]
        index += len(statement.body) if isinstance(statement, cst.SimpleStatementLine) else 1


_VISITOR_NAMES: dict[type, tuple[str, ...]] = {}


class Rule(cst.BatchableCSTVisitor):
    """Base class: subclass it, set ``ID`` and ``EXAMPLES``, write ``visit_*``/``leave_*``.

    The class docstring is the rule's user documentation: a summary line, then *Why* and
    *Fix safety* paragraphs. ``--explain`` prints it with the examples.
    """

    #: Stable kebab-case id; equals the module name with ``_`` for ``-``.
    ID: ClassVar[str] = ""
    #: Examples that double as tests and documentation.
    EXAMPLES: ClassVar[tuple[Example, ...]] = ()
    #: Severity of this rule's findings unless :meth:`flag` is told otherwise.
    SEVERITY: ClassVar[Severity] = Severity.ERROR
    #: The rule needs the whole file, not only the statements that mention its triggers
    #: (:mod:`moe_migrate.codemod.slicing`): where it applies, no file is sliced.
    WHOLE_FILE: ClassVar[bool] = False

    def __init__(self, state: FileState) -> None:
        super().__init__()
        self._state = state

    @classmethod
    def applies_to(cls, file: FileContext) -> bool:
        """Whether the rule runs on this file at all (default: always)."""
        return True

    def get_visitors(self) -> dict[str, Callable[..., object]]:
        """The ``visit_*``/``leave_*`` methods the rule defines, found once per class.

        LibCST's own version calls ``inspect.getmembers`` on every instance and returns its
        do-nothing stubs too (one per node type and field, about 1,600), each of which a
        traversal would then call on every node.
        """
        kind = type(self)
        names = _VISITOR_NAMES.get(kind)
        if names is None:
            # The classes' own namespaces, not ``dir()``: that would sort the stubs too.
            names = _VISITOR_NAMES[kind] = tuple(
                sorted(
                    {
                        name
                        for klass in kind.__mro__
                        if not klass.__module__.startswith("libcst")
                        for name in vars(klass)
                        if name.startswith(("visit_", "leave_"))
                    }
                )
            )
        return {name: getattr(self, name) for name in names}

    @property
    def file(self) -> FileContext:
        return self._state.context

    @property
    def wrapper(self) -> "MetadataWrapper":
        return self._state.wrapper

    def shared(self, analysis: Callable[["MetadataWrapper", FileContext], T]) -> T:
        """Run ``analysis`` once per file and share its result between all rules."""
        memo = self._state.memo
        if analysis not in memo:
            memo[analysis] = analysis(self._state.wrapper, self._state.context)
        return memo[analysis]  # type: ignore[return-value]

    def replace(self, node: cst.CSTNode, new: cst.CSTNode | Edit) -> None:
        """Schedule ``node`` to become ``new``.

        ``new`` may be a function of the node *after* its children were edited, which is how
        edits on nested nodes compose.
        """
        edit: Edit = new if callable(new) else (lambda _updated, _new=new: _new)
        entry = self._state.edits.setdefault(id(node), (node, []))
        entry[1].append((self.ID, edit))

    def add_import(self, module: str, name: str, asname: str | None = None) -> None:
        """Make ``from module import name [as asname]`` available at the top of the file.

        Merged with an existing import of ``module``, never duplicated (see
        :mod:`moe_migrate.codemod.imports`). The rule is responsible for choosing an
        ``asname`` that shadows nothing.
        """
        entry = (module, name, asname)
        if entry not in self._state.imports:
            self._state.imports.append(entry)

    def remove(self, node: cst.CSTNode) -> None:
        """Schedule ``node`` for removal from its parent."""
        self.replace(node, lambda _updated: cst.RemoveFromParent())

    def position(self, node: cst.CSTNode) -> tuple[int, int, int, int]:
        """1-based (line, column, end_line, end_column) of ``node``."""
        return self._state.position(node)

    def flag(
        self,
        node: cst.CSTNode,
        message: str,
        *,
        fix: str | None = None,
        severity: Severity | None = None,
    ) -> None:
        """Report ``node`` for a human; the code is not changed by this."""
        self._state.flagged.append(
            (
                node,
                Finding(
                    path=self.file.path,
                    line=0,
                    column=0,
                    end_line=0,
                    end_column=0,
                    rule=self.ID,
                    severity=severity or self.SEVERITY,
                    message=message,
                    fix=fix,
                ),
            )
        )


def rule_summary(rule: type[Rule]) -> str:
    """The first line of the rule's docstring."""
    return (rule.__doc__ or "").strip().splitlines()[0] if rule.__doc__ else ""
