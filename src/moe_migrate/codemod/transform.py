"""``migrate_source``: bytes in, one ``FileOutcome`` out. Pure, and never raises."""

from __future__ import annotations

import ast
import re
import sys
import traceback
from typing import Sequence

import libcst as cst
from libcst.metadata import MetadataWrapper

from moe_migrate.codemod import slicing
from moe_migrate.codemod.context import FileContext
from moe_migrate.codemod.imports import add_from_import
from moe_migrate.codemod.outcomes import Changed, Failed, FileOutcome, Finding, Unchanged
from moe_migrate.codemod.rule import FileState, Rule
from moe_migrate.codemod.slicing import Focus
from moe_migrate.codemod.walk import visit_batched


def _comments(lines: Sequence[cst.EmptyLine]) -> tuple[cst.EmptyLine, ...]:
    """The lines above a statement worth keeping when it goes: all of them, if any is a comment.

    In a slice (:mod:`codemod.slicing`), a marker and the lines above it are not the
    statement's: they stand for, or belong to, lines the whole file gives to another
    statement, so they always stay.
    """
    marker = slicing.MARKER.decode()
    last = max((i for i, line in enumerate(lines) if line.comment is not None and line.comment.value == marker), default=-1)
    theirs, own = tuple(lines[: last + 1]), tuple(lines[last + 1 :])
    return theirs + (own if any(line.comment is not None for line in own) else ())


class _ApplyEdits(cst.CSTTransformer):
    """Applies scheduled edits bottom-up, so an edit sees its node's children already edited."""

    def __init__(self, state: FileState) -> None:
        super().__init__()
        self._state = state
        self._edits = state.edits
        self.applied: set[str] = set()
        #: id(original statement) -> the comment lines above it, for statements a rule removed.
        self._removed: dict[int, tuple[cst.EmptyLine, ...]] = {}
        #: ids of the nodes above an edit: only those are entered (None: every node).
        self._above: set[int] | None = _above(state.edits, state.parents)

    def on_visit(self, node: cst.CSTNode) -> bool:
        return self._above is None or id(node) in self._above

    def on_leave(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        if self._removed and isinstance(updated_node, (cst.Module, cst.IndentedBlock)):
            updated_node = self._keep_comments(original_node, updated_node)
        entry = self._edits.get(id(original_node))
        if entry is None:
            if isinstance(updated_node, cst.SimpleStatementLine) and not updated_node.body:
                # Its last statement was removed: LibCST would drop the line, comments and all.
                self._removed[id(original_node)] = _comments(updated_node.leading_lines)
                return cst.RemoveFromParent()
            return updated_node
        above = getattr(updated_node, "leading_lines", ())
        for rule_id, edit in entry[1]:
            updated_node = edit(updated_node)
            self.applied.add(rule_id)
            if isinstance(updated_node, (cst.RemovalSentinel, cst.FlattenSentinel)):
                break
        if isinstance(updated_node, cst.RemovalSentinel) and isinstance(original_node, cst.BaseStatement):
            footer = _footer(original_node, self._indent_of(original_node), self._state.wrapper.module.default_indent)
            self._removed[id(original_node)] = _comments(above) + _comments(footer)
        return updated_node

    def _indent_of(self, node: cst.CSTNode) -> str:
        """The indentation of the block ``node`` is in."""
        indents, parent = [], self._state.parents.get(id(node))
        while parent is not None:
            if isinstance(parent, cst.IndentedBlock):
                indents.append(parent.indent if parent.indent is not None else self._state.wrapper.module.default_indent)
            parent = self._state.parents.get(id(parent))
        return "".join(reversed(indents))

    def _keep_comments(self, original, updated):  # type: ignore[no-untyped-def]
        """Move the comments above removed statements onto the next statement kept (or the
        block's footer): removing an import must not delete the comment above it."""
        removed = [id(child) in self._removed for child in original.body]
        if len(original.body) - sum(removed) != len(updated.body):
            return updated  # a FlattenSentinel changed the count: leave it
        body, carried, index = list(updated.body), [], 0
        for child, gone in zip(original.body, removed):
            if gone:
                carried.extend(self._removed.pop(id(child)))
                continue
            if carried:
                body[index] = body[index].with_changes(leading_lines=(*carried, *body[index].leading_lines))
                carried = []
            index += 1
        if not any(removed) or (not carried and body == list(updated.body)):
            return updated
        return updated.with_changes(body=body, footer=(*carried, *updated.footer))


def _above(edits: dict[int, object], parents: dict[int, cst.CSTNode]) -> set[int] | None:
    """The ids of every node that has an edited node below it; None if one cannot be placed."""
    above: set[int] = set()
    for key in edits:
        if key not in parents:
            return None
        node = parents[key]
        while id(node) not in above:
            above.add(id(node))
            parent = parents.get(id(node))
            if parent is None:
                break
            node = parent
    return above


def _footer(statement: cst.CSTNode, indent: str, default_indent: str) -> tuple[cst.EmptyLine, ...]:
    """The lines LibCST gives the blocks that end ``statement`` (comments after the last line
    of an ``if`` body, say), innermost first, written out so they print the same anywhere."""
    block = _last_block(statement)
    if block is None:
        return ()
    inner = indent + (block.indent if block.indent is not None else default_indent)
    lines = _footer(block.body[-1], inner, default_indent) if block.body else ()
    return lines + tuple(
        line.with_changes(indent=False, whitespace=cst.SimpleWhitespace(inner + line.whitespace.value))
        if line.indent
        else line
        for line in block.footer
    )


def _last_block(statement: cst.CSTNode) -> cst.IndentedBlock | None:
    """The indented block a compound statement ends with (its ``else``/``finally``...)."""
    last: cst.CSTNode | None = None
    for name in ("body", "handlers", "orelse", "finalbody", "cases"):
        value = getattr(statement, name, None)
        if isinstance(value, (tuple, list)):
            value = value[-1] if value else None
        if isinstance(value, cst.If):  # elif: its own last block, at the same indentation
            return _last_block(value)
        if value is not None:
            last = value
    if isinstance(last, (cst.Else, cst.Finally, cst.ExceptHandler, cst.ExceptStarHandler, cst.MatchCase)):
        last = last.body
    return last if isinstance(last, cst.IndentedBlock) else None


#: What CPython says when brackets nest deeper than it allows (200). LibCST's native parser is
#: not asked to parse such a file: it overflows its stack (a segfault) at about 1,500 levels.
_TOO_DEEP = ("too many nested parentheses", "too many levels of indentation", "too complex")
#: Python 2 statements: print, exec, ``except E, e:`` (see also :func:`_python2`).
_PYTHON2_STATEMENT = re.compile(rb"^[ \t]*(print[ \t]+[^ \t(=]|exec[ \t]+[\"']|except[ \t]+\w[\w.]*[ \t]*,)", re.M)
_CODING = re.compile(rb"^[ \t\f]*#.*?coding[:=][ \t]*[-\w.]+", re.M)


def _python2(source: bytes, error: SyntaxError | None) -> bool:
    """A Python 2 statement anywhere, or the syntax error sits on a backtick or ``<>``."""
    if _PYTHON2_STATEMENT.search(source):
        return True
    if error is None or not error.lineno or not error.offset:
        return False
    lines = source.splitlines()
    if error.lineno > len(lines):
        return False
    at = lines[error.lineno - 1][error.offset - 1 :]
    return at.startswith((b"`", b"<>"))


def _located(error: SyntaxError) -> str:
    """``at line L, column C: message`` (as much of it as is known), without a final full stop."""
    where = f" at line {error.lineno}" if error.lineno else ""
    if error.lineno and error.offset:
        where += f", column {error.offset}"
    message = str(error.msg).rstrip(".")
    return f"{where.strip()}: {message}" if where else message


def _end(message: str) -> str:
    return message if message.endswith((".", "?", "!")) else message + "."


def _undecodable(source: bytes) -> str:
    """Which line cannot be decoded, with which encoding, and where that encoding came from."""
    import io
    import tokenize

    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(source).readline)
    except SyntaxError as error:
        if "unknown encoding" in str(error):
            return f"cannot decode: {str(error).rstrip('.')}"
        encoding = "utf-8"  # the first line itself is not UTF-8
    if _CODING.search(b"\n".join(source.splitlines()[:2])):
        origin = "the coding declared in the file"
    elif source.startswith(b"\xef\xbb\xbf"):
        origin = "the file starts with a UTF-8 byte order mark"
    else:
        origin = "Python's default: the file declares no coding"
    for number, line in enumerate(source.splitlines(True), 1):
        try:
            line.decode(encoding)
        except UnicodeDecodeError as error:
            return (
                f"cannot decode line {number} as {encoding} ({origin}): byte "
                f"0x{line[error.start]:02x} at column {error.start + 1}"
            )
        except LookupError:
            break
    return f"cannot decode the file as {encoding} ({origin})"


def _check_python(source: bytes, path: str) -> Failed | SyntaxError | ast.Module:
    """CPython's own parser first: fast, and it refuses what would crash LibCST's.

    Returns ``Failed`` for what must not reach LibCST (nesting deeper than Python allows, NUL
    bytes, undecodable bytes), the ``SyntaxError`` for LibCST to confirm (it also knows newer
    syntax than the running Python), or the module's ``ast`` when the file parses.
    """
    try:
        tree = compile(source, path, "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
    except (RecursionError, MemoryError):
        return Failed(path, "parse", f"too deeply nested: Python {sys.version_info[0]}.{sys.version_info[1]} itself cannot parse it. Simplify the file, or pass --exclude for it.")
    except ValueError as error:  # NUL bytes (SyntaxError from 3.12 on)
        return Failed(path, "parse", f"cannot parse: {error} (a NUL byte: is it a binary file?). Pass --exclude for it.")
    except SyntaxError as error:
        text = str(error.msg)
        if "null bytes" in text:
            return Failed(path, "parse", f"cannot parse: {text} (a NUL byte: is it a binary file?). Pass --exclude for it.")
        if any(marker in text for marker in _TOO_DEEP):
            return Failed(path, "parse", f"too deeply nested {_end(_located(error))} Simplify the file, or pass --exclude for it.")
        if "unicode error" in text or "encoding" in text or "decode" in text:
            return Failed(path, "parse", f"{_undecodable(source)}. Fix the bytes or the coding declaration, or pass --exclude for it.")
        if _PYTHON2_STATEMENT.search(source):
            # LibCST knows Python 3.14, where `except A, B:` is valid: do not take Python 2 for it.
            return Failed(path, "parse", f"syntax error {_end(_located(error))} It looks like Python 2, which moe-migrate does not migrate. Fix the file, or pass --exclude for it.")
        return error
    return tree  # type: ignore[no-any-return]


def _parse(source: bytes, path: str, checked: SyntaxError | ast.Module) -> cst.Module | Failed:
    """LibCST's module, or why not (``checked``: what CPython's parser said)."""
    try:
        return cst.parse_module(source)
    except cst.ParserSyntaxError as error:
        if isinstance(checked, SyntaxError):  # both parsers agree; CPython's message is the one people know
            detail = _located(checked)
        else:
            # The native parser's own "error at L:C" is more precise than raw_line/raw_column.
            where = re.search(r"error at (\d+):(\d+): ", error.message)
            line, column = (int(where[1]), int(where[2]) + 1) if where else (error.raw_line, error.raw_column + 1)
            message = error.message[where.end() :] if where else error.message
            detail = f"at line {line}, column {column}: {message.rstrip('.')}"
        error_ = checked if isinstance(checked, SyntaxError) else None
        hint = " It looks like Python 2, which moe-migrate does not migrate." if _python2(source, error_) else ""
        return Failed(path, "parse", f"syntax error {_end(detail)}{hint} Fix the file, or pass --exclude for it.")
    except (UnicodeError, LookupError, SyntaxError, ValueError):
        # LookupError: an unknown coding declaration; ValueError: e.g. NUL bytes.
        return Failed(path, "parse", f"{_undecodable(source)}. Fix the bytes or the coding declaration, or pass --exclude for it.")
    except RecursionError:
        return Failed(path, "parse", "too deeply nested to parse. Simplify the file, or pass --exclude for it.")


def _splice(source: bytes, printed: bytes, after: bytes) -> bytes | None:
    """Carry the edits LibCST made (``printed`` -> ``after``) over onto the real ``source``.

    LibCST 1.9 prints a few files differently from how they are written: a blank line
    followed by a whitespace-only line loses the blank line; a lone CR at the end is dropped.
    Where every edited line of ``printed`` is, unchanged, a line of ``source``, the edit is
    applied to ``source`` itself; otherwise ``None``.
    """
    from difflib import SequenceMatcher

    real, old, new = source.splitlines(True), printed.splitlines(True), after.splitlines(True)
    where: dict[int, int] = {}  # line of printed -> the same line in source
    # LibCST only drops lines: embed printed in source, earliest match first.
    position = 0
    for index, line in enumerate(old):
        while position < len(real) and real[position] != line:
            position += 1
        if position == len(real):
            break
        where[index] = position
        position += 1
    if len(where) < len(old):  # not a subsequence: match what can be matched
        where.clear()
        for tag, i1, i2, j1, _ in SequenceMatcher(None, old, real, autojunk=False).get_opcodes():
            if tag == "equal":
                where.update((i1 + k, j1 + k) for k in range(i2 - i1))
    out: list[bytes] = []
    done = 0
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        if i1 < i2:
            if any(k not in where for k in range(i1, i2)):
                return None
            start, stop = where[i1], where[i2 - 1] + 1
            mapped = {where[k] for k in range(i1, i2)}
            if any(real[k].strip() for k in range(start, stop) if k not in mapped):
                return None  # only lines LibCST dropped (blank ones) may sit between them
        elif i1 in where:
            start = stop = where[i1]
        elif i1 == len(old):
            start = stop = len(real)
        else:
            return None
        if start < done:
            return None
        out.extend(real[done:start])
        out.extend(new[j1:j2])
        done = stop
    out.extend(real[done:])
    return b"".join(out)


def _code_lines(source: bytes) -> list[bytes]:
    return [line for line in source.splitlines() if line.strip()]


def _faithful(source: bytes, after: bytes, original: cst.Module, path: str) -> bytes | Failed:
    """The rewrite, refused if it does not parse or would touch bytes outside its edits."""
    from moe_migrate.codemod.write import unparsable

    printed = original.bytes
    if printed != source:
        spliced = _splice(source, printed, after)
        # The same code as LibCST's own output, line for line; only blank lines may differ.
        faithful = spliced is not None and _code_lines(spliced) == _code_lines(after)
        if not faithful:
            return Failed(path, "parse", "cannot rewrite without changing other bytes of the file (LibCST does not print it back as written: unusual line endings or whitespace-only lines?). Migrate it by hand, or pass --exclude for it.")
        after = spliced  # type: ignore[assignment]
    # Python's own parser judges the output (and is ten times faster than LibCST's); only where
    # it cannot read the input either (newer syntax than this Python) does LibCST judge instead.
    if _compiles(after):
        return after
    problem = unparsable(source, after)
    if problem is None:
        try:
            cst.parse_module(after)
        except Exception as error:  # noqa: BLE001 - any failure to re-parse is a refusal
            problem = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    if problem is not None:
        return Failed(path, "rule", f"internal error: the rewritten file does not parse ({problem}); nothing was rewritten. Please report it with this file.")
    return after


def _compiles(source: bytes) -> bool:
    try:
        compile(source, "<rewritten>", "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def migrate_source(
    source: bytes, rules: Sequence[type[Rule]], context: FileContext, focus: Focus | None = None
) -> FileOutcome:
    """Run ``rules`` over ``source`` in one pass and say what they would do.

    Never raises: a parse error is ``Failed(stage="parse")``, a crash inside a rule or the edit
    pass is ``Failed(stage="rule")`` with the traceback. Bytes are kept exactly outside the
    edited nodes (encoding, BOM, newlines, comments); ``Changed`` only when they differ.

    With a ``focus`` (what the rules look for), LibCST parses only the statements that matter
    (:mod:`codemod.slicing`); the outcome is the same as without it.
    """
    path = context.path
    active = [rule for rule in rules if rule.applies_to(context)]
    if not active:
        return Unchanged(path)
    checked = _check_python(source, path)
    if isinstance(checked, Failed):
        return checked
    if focus is not None and isinstance(checked, ast.Module) and not any(r.WHOLE_FILE for r in active):
        try:
            part = slicing.plan(source, checked, focus)
        except Exception:  # noqa: BLE001 - never a reason to fail: the whole file is parsed instead
            part = None
        if part is not None:
            outcome = _migrate_slice(source, part, active, context)
            if outcome is not None:
                return outcome
    parsed = _parse(source, path, checked)
    if isinstance(parsed, Failed):
        return parsed
    result = _apply_rules(parsed, source, active, context, None)
    if not isinstance(result, tuple):
        return result
    after, applied, findings = result
    if after == source:
        return Unchanged(path, findings)
    checked_after = _faithful(source, after, parsed, path)
    if isinstance(checked_after, Failed):
        return checked_after
    return Changed(path, source, checked_after, applied, findings)


def _migrate_slice(
    source: bytes, part: slicing.Slice, rules: Sequence[type[Rule]], context: FileContext
) -> FileOutcome | None:
    """The outcome from the slice alone, or ``None`` where only the whole file can tell."""
    try:
        parsed = cst.parse_module(part.text)
    except Exception:  # noqa: BLE001 - the whole file gets the real diagnosis
        return None
    result = _apply_rules(parsed, part.text, rules, context, part)
    if isinstance(result, Failed):
        return None  # the whole file gives the authoritative report
    if isinstance(result, Unchanged):
        return result
    edited, applied, findings = result
    if edited == part.text:
        return Unchanged(context.path, findings)
    if parsed.bytes != part.text:
        return None  # LibCST does not print the slice back as written
    after = part.splice(source, edited)
    if after is None or after == source or not _compiles(after):
        return None
    return Changed(context.path, source, after, applied, findings)


def _apply_rules(
    parsed: cst.Module,
    text: bytes,
    rules: Sequence[type[Rule]],
    context: FileContext,
    part: slicing.Slice | None,
    syntax: ast.Module | None = None,
) -> tuple[bytes, tuple[str, ...], tuple[Finding, ...]] | Unchanged | Failed:
    """(printed module after the edits, rules applied, findings), or ``Unchanged`` with the
    findings when no rule scheduled an edit, or why the rules failed. ``syntax``: Python's
    parse of ``text``, where it was made already."""
    path = context.path
    try:
        wrapper = MetadataWrapper(parsed, unsafe_skip_copy=True)
        state = FileState(
            context=context, wrapper=wrapper, text=text, syntax=syntax, lines=part.line if part else None
        )
        state.parents = visit_batched(parsed, [rule(state) for rule in rules])
        findings = tuple(sorted(state.findings))
        if not state.edits:
            return Unchanged(path, findings)
        applier = _ApplyEdits(state)
        module = wrapper.module.visit(applier)
        for from_module, name, asname in state.imports:
            module = add_from_import(module, from_module, name, asname)
        return module.bytes, tuple(sorted(applier.applied)), findings
    except RecursionError:
        return Failed(
            path,
            "rule",
            "too deeply nested to migrate (Python's recursion limit was reached). "
            "Migrate it by hand, or pass --exclude for it.",
            traceback.format_exc(),
        )
    except Exception as error:  # noqa: BLE001 - a rule crash must not take down the run
        return Failed(
            path,
            "rule",
            f"internal error while migrating ({type(error).__name__}: {error}); "
            "please report it with this file",
            traceback.format_exc(),
        )
