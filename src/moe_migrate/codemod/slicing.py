"""The part of a file the rules look at: the statements that mention what they look for.

LibCST costs about a second on a large model file, and a rule about ``SharedFusedMoE`` needs
only its imports and the class that builds the layer. So before LibCST sees a file, Python's
own parser (ten times faster) cuts it into top-level statements and, inside classes, members.
A statement is kept when it mentions one of the rules' words (:class:`Focus`), or a name
derived from them (an alias, a subclass, an attribute assigned from them), or binds one of
the names the rules consult; imports are always kept. Everything else is left out of the text
LibCST parses, the slice.

The slice is the file's own lines, unaltered and in order, with a marker comment where lines
were left out. So a finding's line maps back exactly (:meth:`Slice.line`), and an edited slice
is put back by replacing each run of kept lines with what LibCST printed between the markers
(:meth:`Slice.splice`). A slice that cannot be put back is refused, and the engine then runs
on the whole file; a test runs every fixture and the vLLM tree both ways and compares bytes.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

#: The comment that stands for lines left out. Files that contain it are never sliced.
MARKER = b"# moe-migrate: lines left out of the slice"
#: Slicing a file that keeps most of its lines costs more than it saves.
MAX_KEPT = 0.8


@dataclass(frozen=True)
class Focus:
    """What the selected rules look at, in the words of the rule catalog."""

    #: Byte strings: a statement that contains none of them (or of the names derived from them)
    #: cannot matter to any rule.
    words: tuple[bytes, ...]
    #: A statement that binds a name containing one of these is kept too: the rules check what
    #: such names are bound to (``FusedMoE`` before renaming to it, say).
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Slice:
    """The kept lines of a file, with a marker line between runs that are not adjacent."""

    text: bytes
    #: For each line of ``text``, the 0-based line of the file it is; -1 for a marker.
    origin: tuple[int, ...]
    #: [start, stop) line ranges of the file that ``text`` keeps, in order.
    runs: tuple[tuple[int, int], ...]

    def line(self, number: int) -> int:
        """The file's 1-based line number of the slice's line ``number`` (1-based)."""
        return self.origin[number - 1] + 1

    def splice(self, source: bytes, edited: bytes) -> bytes | None:
        """``source`` with each run of kept lines replaced by its part of ``edited``.

        ``None`` when ``edited`` does not have the markers it had, one between each run.
        """
        parts: list[list[bytes]] = [[]]
        for line in edited.splitlines(True):
            if line.strip() == MARKER:
                parts.append([])
            else:
                parts[-1].append(line)
        if len(parts) != len(self.runs):
            return None
        lines = source.splitlines(True)
        out: list[bytes] = []
        done = 0
        for (start, stop), part in zip(self.runs, parts):
            out += lines[done:start]
            out += part
            done = stop
        out += lines[done:]
        joined = b"".join(out)
        if not source.endswith((b"\n", b"\r")):
            # LibCST prints a file without a final newline without one, whichever line is last
            # once the edits are made (a removed last statement leaves the line above it last).
            for newline in (b"\r\n", b"\n", b"\r"):
                if joined.endswith(newline):
                    return joined[: -len(newline)]
        return joined


@dataclass
class _Chunk:
    """Lines [start, stop) of the file: one statement with the comments and blanks above it."""

    start: int
    stop: int
    statements: list[ast.stmt]
    #: For a class that may be kept in part: its header chunk and its members' chunks.
    header: "_Chunk | None" = None
    members: "list[_Chunk] | None" = None
    #: For the header chunk of a class: the class.
    owner: ast.ClassDef | None = None


def plan(source: bytes, tree: ast.Module, focus: Focus) -> Slice | None:
    """The slice of ``source`` the rules need, or ``None`` when they need (most of) the file."""
    if MARKER in source or not focus.words:
        return None
    lines = source.splitlines(True)
    chunks = list(_chunks(tree.body, 0, len(lines), lines))
    if not chunks:
        return None
    leaves = list(_leaves(chunks, lines))
    text = {id(c): b"".join(lines[c.start : c.stop]) for c in leaves}
    keep = _keep(chunks, lines, text, focus)
    runs = _runs(keep)
    kept = sum(stop - start for start, stop in runs)
    if kept > MAX_KEPT * len(lines):
        return None
    return _build(lines, runs)


def _chunks(body: Sequence[ast.stmt], start: int, stop: int, lines: list[bytes]) -> Iterator[_Chunk]:
    """Consecutive statements as chunks; statements sharing a line (``a; b``) are one chunk.

    The first chunk starts at ``start``; lines after the last statement (up to ``stop``) form
    a chunk of their own, with no statements. A chunk ends where LibCST's statement ends,
    which for a block is past the comments and blank lines indented deeper than the block's
    own line (LibCST gives those to the block).
    """
    current: _Chunk | None = None
    for statement in body:
        end = _end(statement, lines, stop)
        if current is not None and _first_line(statement) < current.stop:
            current.statements.append(statement)
            current.stop = max(current.stop, end)
            continue
        if current is not None:
            yield current
            start = current.stop
        current = _Chunk(start, end, [statement])
    if current is not None:
        yield current
        start = current.stop
    if start < stop:
        yield _Chunk(start, stop, [])


_BLANK_OR_COMMENT = re.compile(rb"[ \t\f]*(#.*)?\r?\n?\Z")


def _end(statement: ast.stmt, lines: list[bytes], stop: int) -> int:
    """The line after ``statement`` as LibCST sees it: a block also owns the blank and comment
    lines after it, up to the last one that starts with the block's own indentation."""
    end = statement.end_lineno or statement.lineno
    last = _last_inner(statement)
    if last is None:
        return end
    line = lines[last.lineno - 1]
    indent = line[: len(line) - len(line.lstrip(b" \t\f"))]
    if len(indent) != last.col_offset or not indent:
        return end  # `else: pass` on one line: no indented block ends here
    owned = index = end
    while index < stop and _BLANK_OR_COMMENT.match(lines[index]):
        if lines[index].startswith(indent):
            owned = index + 1
        index += 1
    return owned


def _last_inner(statement: ast.stmt) -> ast.stmt | None:
    """The last statement of the last block of a compound statement (None for a simple one)."""
    blocks = [getattr(statement, name, None) for name in ("body", "orelse", "finalbody")]
    blocks += [handler.body for handler in getattr(statement, "handlers", ())]
    blocks += [case.body for case in getattr(statement, "cases", ())]
    inner = [s for block in blocks if isinstance(block, list) for s in block if isinstance(s, ast.stmt)]
    return max(inner, key=lambda s: (s.end_lineno or s.lineno, s.lineno), default=None)


def _first_line(statement: ast.stmt) -> int:
    """0-based first line of ``statement``, its decorators included."""
    decorators = getattr(statement, "decorator_list", ())
    return min([statement.lineno, *(d.lineno for d in decorators)]) - 1


def _split_class(chunk: _Chunk, lines: list[bytes]) -> None:
    """Give a class chunk a header and member chunks, when its body starts on a line of its own."""
    (node,) = chunk.statements
    assert isinstance(node, ast.ClassDef)
    body_start = _first_line(node.body[0])
    if body_start <= _first_line(node):
        return  # `class A: x = 1`
    chunk.header = _Chunk(chunk.start, body_start, [], owner=node)
    chunk.members = list(_chunks(node.body, body_start, chunk.stop, lines))


def _leaves(chunks: Iterable[_Chunk], lines: list[bytes]) -> Iterator[_Chunk]:
    """Every chunk that is kept or left out whole: members and headers of split classes.

    The first chunk is never split: it holds the file's first lines (a coding declaration).
    """
    for index, chunk in enumerate(chunks):
        single = len(chunk.statements) == 1 and isinstance(chunk.statements[0], ast.ClassDef)
        if index and single and chunk.members is None:
            _split_class(chunk, lines)
        if chunk.members is not None and chunk.header is not None:
            yield chunk.header
            yield from chunk.members
        else:
            yield chunk


def _keep(
    chunks: list[_Chunk], lines: list[bytes], text: dict[int, bytes], focus: Focus
) -> list[tuple[int, int]]:
    """The line ranges to keep: a fixed point over the names derived from kept statements.

    Names are derived in three kinds (:func:`_derived`): names for the class, which derive
    further names in turn; the other bases of its subclasses, whose definitions the rules read
    (is it a plain mixin?); and names holding a layer (``self.experts``), which derive nothing:
    whatever is assigned from a layer's output would otherwise pull in the whole file.
    """
    found: dict[str, set[bytes]] = {"class": {re.escape(w) for w in focus.words}, "base": set(), "holder": set()}
    names = _Names(focus.names)
    while True:
        pattern = re.compile(b"|".join(sorted(set().union(*found.values()))))
        kept: list[_Chunk] = []
        for index, chunk in enumerate(chunks):
            # The first lines (a coding declaration) and the lines after the last statement
            # (which LibCST may not print back as written: then the whole file is parsed) stay.
            kept += _kept_of(chunk, index == 0 or not chunk.statements, text, pattern, names)
        of_class = re.compile(b"|".join(sorted(found["class"])))
        of_base = re.compile(b"|".join(sorted(found["base"]))) if found["base"] else None
        new = False
        for chunk in kept:
            for kind, name in _derived(chunk, lines, of_class, of_base):
                word = rb"\b" + re.escape(name.encode()) + rb"\b"
                if word not in found[kind]:
                    found[kind].add(word)
                    new = True
        if not new:
            return [(c.start, c.stop) for c in kept]


def _kept_of(
    chunk: _Chunk, always: bool, text: dict[int, bytes], pattern: re.Pattern[bytes], names: "_Names"
) -> list[_Chunk]:
    """The parts of one top-level chunk to keep (all of it, some members, or nothing)."""
    if chunk.members is None or chunk.header is None:
        wanted = always or _imports(chunk) or pattern.search(text[id(chunk)]) or names.bound_in(chunk, text)
        return [chunk] if wanted else []
    if pattern.search(text[id(chunk.header)]):
        return [chunk.header, *chunk.members]  # the class itself is named in its header: all of it
    members = [m for m in chunk.members if pattern.search(text[id(m)]) or names.bound_in(m, text)]
    if not members:
        return []
    wanted = {id(m) for m in members}
    left_out = [m for m in chunk.members if id(m) not in wanted and m.statements]
    if left_out:
        # One member no rule touches stays too: were the rules to remove every kept member,
        # LibCST would print `pass` in the emptied body, which the whole file does not need.
        wanted.add(id(min(left_out, key=lambda m: m.stop - m.start)))
        members = [m for m in chunk.members if id(m) in wanted]
    return [chunk.header, *members]


def _imports(chunk: _Chunk) -> bool:
    """An import, or a block of them (``if TYPE_CHECKING:``, ``try: ... except ImportError:``)."""
    for statement in chunk.statements:
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            return True
        if isinstance(statement, (ast.If, ast.Try)):
            blocks = [statement.body, statement.orelse, *(getattr(statement, "handlers", ()))]
            if any(isinstance(s, (ast.Import, ast.ImportFrom)) for b in blocks for s in _body(b)):
                return True
    return False


def _body(block: object) -> list[ast.stmt]:
    return block.body if isinstance(block, ast.ExceptHandler) else list(block)  # type: ignore[arg-type]


class _Names:
    """The names the rules check the bindings of (``Focus.names``), and which chunks bind one."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self._text = re.compile(b"|".join(re.escape(n.encode()) for n in names)) if names else None
        self._name = re.compile("|".join(re.escape(n) for n in names)) if names else None
        self._seen: dict[int, bool] = {}

    def bound_in(self, chunk: _Chunk, text: dict[int, bytes]) -> bool:
        """The chunk binds, anywhere inside it, one of the names (or a name containing one)."""
        if self._text is None or self._name is None or not self._text.search(text[id(chunk)]):
            return False
        if id(chunk) not in self._seen:
            found = any(self._name.search(n) for s in chunk.statements for n in _bound_names(s))
            self._seen[id(chunk)] = found
        return self._seen[id(chunk)]


def _bound_names(statement: ast.stmt) -> Iterator[str]:
    for node in ast.walk(statement):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            yield node.id
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.name
        elif isinstance(node, ast.alias):
            yield node.asname or node.name.split(".")[0]
        elif isinstance(node, ast.arg):
            yield node.arg
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            yield from node.names
        elif isinstance(node, ast.ExceptHandler) and node.name:
            yield node.name


def _derived(
    chunk: _Chunk, lines: list[bytes], of_class: re.Pattern[bytes], of_base: re.Pattern[bytes] | None
) -> Iterator[tuple[str, str]]:
    """(kind, name) for the names a kept chunk derives (see :func:`_keep`).

    ``from m import SharedFusedMoE as SFM`` and ``class NPUMoE(Mixin, SharedFusedMoE)`` give
    the classes ``SFM`` and ``NPUMoE`` and the base ``Mixin`` (and ``Mixin``'s own bases);
    ``self.experts = SharedFusedMoE(...)`` and ``experts: SharedFusedMoE`` give the holder
    ``experts``. An expression is judged by the lines it spans (never by unparsing it: that
    recurses, and a file may nest deeper than the recursion limit allows).
    """

    def mentions(node: ast.AST) -> bool:
        start, stop = node.lineno - 1, node.end_lineno or node.lineno  # type: ignore[attr-defined]
        return of_class.search(b"".join(lines[start:stop])) is not None

    classes = [chunk.owner] if chunk.owner is not None else []
    for statement in chunk.statements:
        for node in ast.walk(statement):
            if isinstance(node, ast.ClassDef):
                classes.append(node)
            elif isinstance(node, ast.alias) and node.asname and of_class.search(node.name.encode()):
                yield "class", node.asname
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr)):
                typed = isinstance(node, ast.AnnAssign) and mentions(node.annotation)
                if typed or (node.value is not None and mentions(node.value)):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    yield from (("holder", n) for t in targets for n in _target_names(t))
    for cls in classes:
        bases = [b.id for b in cls.bases if isinstance(b, ast.Name)]
        if any(mentions(b) for b in [*cls.bases, *cls.keywords]):
            yield "class", cls.name
        elif not (of_base is not None and of_base.search(cls.name.encode())):
            continue
        yield from (("base", b) for b in bases)


def _target_names(target: ast.expr) -> Iterator[str]:
    """``x`` of ``x = ...``, ``experts`` of ``self.experts = ...``, each name of a tuple target."""
    if isinstance(target, ast.Name):
        yield target.id
    elif isinstance(target, ast.Attribute):
        yield target.attr
    elif isinstance(target, (ast.Tuple, ast.List)):
        for element in target.elts:
            yield from _target_names(element)
    elif isinstance(target, ast.Starred):
        yield from _target_names(target.value)


def _runs(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Adjacent ranges merged."""
    runs: list[tuple[int, int]] = []
    for start, stop in ranges:
        if start >= stop:
            continue
        if runs and runs[-1][1] == start:
            runs[-1] = (runs[-1][0], stop)
        else:
            runs.append((start, stop))
    return runs


def _build(lines: list[bytes], runs: list[tuple[int, int]]) -> Slice:
    text: list[bytes] = []
    origin: list[int] = []
    for index, (start, stop) in enumerate(runs):
        if index:
            before = lines[runs[index - 1][1] - 1]
            newline = before[len(before.rstrip(b"\r\n")) :] or b"\n"
            text.append(MARKER + newline)
            origin.append(-1)
        text += lines[start:stop]
        origin += range(start, stop)
    return Slice(b"".join(text), tuple(origin), tuple(runs))
