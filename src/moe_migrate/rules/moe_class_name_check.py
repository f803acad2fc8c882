"""moe-class-name-check: class-name tests for vLLM's MoE layer become ``is_moe_layer(x)``."""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from moe_migrate.codemod.context import FileContext
from moe_migrate.codemod.rule import Flagged, Rewrite, Rule, Unchanged
from moe_migrate.codemod.scopes import Scope
from moe_migrate.rules._uses import source
from moe_migrate.rules._vllm import NEW_CLASS, OLD_CLASS, analyse, bound_to

#: The class names that meant "vLLM's MoE layer" before the removal.
VLLM_NAMES = frozenset({NEW_CLASS, OLD_CLASS})
HELPER = "is_moe_layer"
HELPER_MODULE = "vllm.utils"
HELPER_ALIAS = "vllm_is_moe_layer"
_HELPER_QUALNAMES = frozenset({f"{HELPER_MODULE}.{HELPER}"})

_BEFORE = (
    "moe_modules = [\n"
    "    module\n"
    "    for module in model.modules()\n"
    "    if (\n"
    '        module.__class__.__name__ == "FusedMoE"\n'
    '        or module.__class__.__name__ == "SharedFusedMoE"\n'
    "    )\n"
    "]\n"
)
_AFTER = (
    "from vllm.utils import is_moe_layer\n\n"
    "moe_modules = [\n"
    "    module\n"
    "    for module in model.modules()\n"
    "    if is_moe_layer(module)\n"
    "]\n"
)


@dataclass(frozen=True)
class _Check:
    """One comparison of a class name: ``<subject>'s class name [not] in <names>``."""

    subject: cst.BaseExpression
    names: frozenset[str]
    negated: bool


def _subject(node: cst.BaseExpression) -> cst.BaseExpression | None:
    """``x`` of ``x.__class__.__name__``, ``type(x).__name__`` (or ``__qualname__``), or of
    ``x._get_name()``, torch's name of a module's class."""
    if (
        isinstance(node, cst.Call)
        and not node.args
        and isinstance(node.func, cst.Attribute)
        and node.func.attr.value == "_get_name"
    ):
        return node.func.value
    if not (isinstance(node, cst.Attribute) and node.attr.value in ("__name__", "__qualname__")):
        return None
    inner = node.value
    if isinstance(inner, cst.Attribute) and inner.attr.value == "__class__":
        return inner.value
    if (
        isinstance(inner, cst.Call)
        and isinstance(inner.func, cst.Name)
        and inner.func.value == "type"
        and len(inner.args) == 1
        and inner.args[0].keyword is None
        and not inner.args[0].star
    ):
        return inner.args[0].value
    return None


def _string(node: cst.BaseExpression) -> str | None:
    if isinstance(node, cst.SimpleString):
        value = node.evaluated_value
        return value if isinstance(value, str) else None
    return None


def _names(node: cst.BaseExpression) -> frozenset[str] | None:
    """The names of a literal tuple/list/set of plain strings (f-strings are not names)."""
    if not isinstance(node, (cst.Tuple, cst.List, cst.Set)):
        return None
    names = [_string(element.value) for element in node.elements]
    if not names or any(n is None or isinstance(e, cst.StarredElement) for n, e in zip(names, node.elements)):
        return None
    return frozenset(names)  # type: ignore[arg-type]


def parse_check(node: cst.BaseExpression) -> _Check | None:
    """The class-name check ``node`` makes, or None if it is not one."""
    if not isinstance(node, cst.Comparison) or len(node.comparisons) != 1:
        return None
    target = node.comparisons[0]
    operator = target.operator
    if isinstance(operator, (cst.Equal, cst.NotEqual)):
        for side, other in ((node.left, target.comparator), (target.comparator, node.left)):
            subject, name = _subject(side), _string(other)
            if subject is not None and name is not None:
                return _Check(subject, frozenset({name}), isinstance(operator, cst.NotEqual))
        return None
    if isinstance(operator, (cst.In, cst.NotIn)):
        subject, names = _subject(node.left), _names(target.comparator)
        if subject is not None and names is not None:
            return _Check(subject, names, isinstance(operator, cst.NotIn))
    return None


def _operands(node: cst.BooleanOperation) -> list[cst.BaseExpression]:
    """The flattened operands of ``a or b or c`` (same operator all the way down)."""
    kind = type(node.operator)
    out: list[cst.BaseExpression] = []
    for side in (node.left, node.right):
        if isinstance(side, cst.BooleanOperation) and isinstance(side.operator, kind) and not side.lpar:
            out.extend(_operands(side))
        else:
            out.append(side)
    return out


def _chain(node: cst.BooleanOperation) -> list[cst.BooleanOperation]:
    """The ``BooleanOperation`` nodes that :func:`_operands` flattens into ``node``."""
    kind = type(node.operator)
    out = [node]
    for side in (node.left, node.right):
        if isinstance(side, cst.BooleanOperation) and isinstance(side.operator, kind) and not side.lpar:
            out.extend(_chain(side))
    return out


class MoeClassNameCheck(Rule):
    """Test for vLLM's MoE layer with `is_moe_layer(x)`, not by class name.

    Why: vLLM replaced checks such as `x.__class__.__name__ == "FusedMoE" or
    x.__class__.__name__ == "SharedFusedMoE"` with `is_moe_layer(x)` from `vllm.utils` when
    it removed `SharedFusedMoE`. A name check that still lists the removed class is dead
    code at best, and a check for `"FusedMoE"` alone misses subclasses.

    Fix safety: safe for checks whose names are `"FusedMoE"` and `"SharedFusedMoE"`, or
    `"FusedMoE"` alone (`==`, `in` a literal tuple/list/set, either order, `or`-ed together,
    `type(x).__name__`, `__qualname__` and torch's `x._get_name()` too); `!=`, `not in` and
    `not (...)` become `not is_moe_layer(x)`.
    `is_moe_layer` also accepts subclasses of `FusedMoE`, which is what vLLM itself now does.
    Two kinds of check are reported, not rewritten, because `is_moe_layer` would change what
    they match: one that mixes vLLM's names with others (`("FusedMoE", "AscendFusedMoE")`),
    and one for `"SharedFusedMoE"` alone, which tells the layers with shared experts apart
    from the others. A check with a comment inside it is reported too: the rewrite would
    drop the comment. The checks inside a function named `is_moe_layer` (a fork's own
    helper) are left alone: rewritten, it would call itself. Other names
    (`"FusedMoEWithLoRA"`), substring tests and f-strings are left alone. The import
    `from vllm.utils import is_moe_layer` is
    merged with an existing one; where the file already binds `is_moe_layer` to something
    else, it is imported as `vllm_is_moe_layer`.
    """

    ID = "moe-class-name-check"
    EXAMPLES = (
        Rewrite(_BEFORE, _AFTER, "vLLM's own check, over several lines"),
        Rewrite(
            "if type(layer).__name__ in ('FusedMoE', 'SharedFusedMoE'):\n    init(layer)\n",
            "from vllm.utils import is_moe_layer\n\nif is_moe_layer(layer):\n    init(layer)\n",
            "type(x).__name__ in a tuple",
        ),
        Rewrite(
            "if m._get_name() == 'FusedMoE' or type(m).__qualname__ == 'SharedFusedMoE':\n    init(m)\n",
            "from vllm.utils import is_moe_layer\n\nif is_moe_layer(m):\n    init(m)\n",
            "torch's _get_name() and __qualname__ name the class too",
        ),
        Rewrite(
            "from vllm.utils import random_uuid\n\n"
            "skip = m.__class__.__name__ != 'FusedMoE' and m.__class__.__name__ != 'SharedFusedMoE'\n",
            "from vllm.utils import is_moe_layer, random_uuid\n\n"
            "skip = not is_moe_layer(m)\n",
            "a negation, merged with an existing import",
        ),
        Rewrite(
            "def f(is_moe_layer, m):\n    return m.__class__.__name__ in {'SharedFusedMoE', 'FusedMoE'}\n",
            "from vllm.utils import is_moe_layer as vllm_is_moe_layer\n\n\n"
            "def f(is_moe_layer, m):\n    return vllm_is_moe_layer(m)\n",
            "a local is_moe_layer is not shadowed",
        ),
        Flagged(
            "ok = type(m).__name__ in ('FusedMoE', 'SharedFusedMoE', 'AscendFusedMoE')\n",
            lines=(1,),
            note="vLLM's names mixed with a plugin's",
        ),
        Flagged(
            "if type(m).__name__ == 'SharedFusedMoE':\n"
            "    counts['shared'] += 1\n"
            "elif type(m).__name__ == 'FusedMoE':\n"
            "    counts['plain'] += 1\n",
            lines=(1,),
            after="from vllm.utils import is_moe_layer\n\n"
            "if type(m).__name__ == 'SharedFusedMoE':\n"
            "    counts['shared'] += 1\n"
            "elif is_moe_layer(m):\n"
            "    counts['plain'] += 1\n",
            note="the removed class told apart from FusedMoE (the FusedMoE test alone is rewritten)",
        ),
        Flagged(
            "def f(m):\n"
            "    return (\n"
            "        m.__class__.__name__ == 'FusedMoE'\n"
            "        # keep in sync with the shared variant\n"
            "        or m.__class__.__name__ == 'SharedFusedMoE'\n"
            "    )\n",
            lines=(3,),
            note="a comment inside the check, which the rewrite would drop",
        ),
        Flagged(
            "ok = (\n"
            "    m.__class__.__name__ == 'FusedMoE'\n"
            "    or m.__class__.__name__ == 'SharedFusedMoE'\n"
            "    or m.__class__.__name__ == 'MyFusedMoE'\n"
            ")\n",
            lines=(2,),
            note="vLLM's names mixed with a plugin's, over several lines: one finding, nothing rewritten",
        ),
        Unchanged(
            "def is_moe_layer(module):\n"
            "    return module.__class__.__name__ in ('FusedMoE', 'SharedFusedMoE')\n",
            "a fork's own is_moe_layer (rewritten, it would call itself)",
        ),
        Unchanged(
            "if module.__class__.__name__ == 'FusedMoEWithLoRA':\n    pass\n",
            "another class",
        ),
        Unchanged("if 'fusedmoe' in name.lower():\n    pass\n", "a substring test"),
        Unchanged(
            "if m.__class__.__name__ == f'{prefix}FusedMoE':\n    pass\n", "an f-string"
        ),
    )

    def visit_Module(self, node: cst.Module) -> None:
        self._done: set[int] = set()
        self._scopes: list[Scope] = []
        self._pending: list[tuple[cst.BaseExpression, cst.BaseExpression, bool]] = []
        #: Open functions named `is_moe_layer`: a fork's own helper, whose checks are its body.
        self._helpers: list[cst.FunctionDef] = []

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        if node.name.value == HELPER:
            self._helpers.append(node)

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        if self._helpers and self._helpers[-1] is original_node:
            self._helpers.pop()

    def visit_BooleanOperation(self, node: cst.BooleanOperation) -> None:
        if id(node) in self._done or self._helpers:
            return
        operands = _operands(node)
        checks = [parse_check(o) for o in operands]
        if any(c is None for c in checks):
            return  # `a or <check>`: each check is handled on its own
        first = checks[0]
        assert first is not None
        negated = isinstance(node.operator, cst.And)
        if not all(c is not None and c.negated == negated and c.subject.deep_equals(first.subject) for c in checks):
            return
        names = frozenset().union(*(c.names for c in checks if c is not None))
        # The operands, and the `a or b` inside `a or b or c`: one check, judged once.
        self._done.update(id(o) for o in operands)
        self._done.update(id(inner) for inner in _chain(node))
        self._convert(node, first.subject, names, negated)

    def visit_Comparison(self, node: cst.Comparison) -> None:
        if id(node) in self._done or self._helpers:
            return
        check = parse_check(node)
        if check is not None:
            self._convert(node, check.subject, check.names, check.negated)

    def _convert(self, node: cst.BaseExpression, subject: cst.BaseExpression, names: frozenset[str], negated: bool) -> None:
        vllm = names & VLLM_NAMES
        if not vllm:
            return
        if names - VLLM_NAMES:
            others = ", ".join(sorted(names - VLLM_NAMES))
            self.flag(
                node,
                f"This class-name check mixes vLLM's MoE layer with other classes ({others}); "
                f"`{HELPER}(...)` would change what it matches.",
                fix=f"Split it: `{HELPER}(x) or type(x).__name__ in (...)` for the other names.",
            )
            return
        if names == {OLD_CLASS}:
            self.flag(
                node,
                f"This class-name check tells the removed `{OLD_CLASS}` apart from other MoE "
                f"layers; those layers are now `{NEW_CLASS}` built with `shared_experts=`, and "
                f"`{HELPER}(...)` would match every MoE layer.",
                fix=f"Test for what the branch needs: `{HELPER}(x)` for any MoE layer, or whether "
                "the layer was given shared experts.",
            )
            return
        if _has_comment(node):
            self.flag(
                node,
                f"This class-name check is `{HELPER}(...)` in the new vLLM, but it holds a comment "
                "that rewriting the expression would drop.",
                fix=f"Write `{'not ' if negated else ''}{HELPER}(x)` here yourself, and keep the "
                "comment above the statement.",
            )
            return
        # The scopes come with the shared analysis of vLLM's names, made once per file.
        scope = self.shared(analyse).scopes.get(node)
        if scope is not None:
            self._scopes.append(scope)
        self._pending.append((node, subject, negated))

    def leave_Module(self, original_node: cst.Module) -> None:
        if not self._pending:
            return
        name = self._callable_name()
        for node, subject, negated in self._pending:
            call: cst.BaseExpression = cst.Call(func=cst.Name(name), args=[cst.Arg(subject)])
            if negated:
                call = cst.UnaryOperation(operator=cst.Not(), expression=call)
            self.replace(node, call)

    def _callable_name(self) -> str:
        """``is_moe_layer`` unless the file binds it to something else; import what is needed."""
        if self.file.module == HELPER_MODULE:
            return HELPER  # vllm/utils/__init__.py defines it
        if all(_bound_to_helper(scope, HELPER, self.file) in (True, None) for scope in self._scopes):
            if not all(_bound_to_helper(scope, HELPER, self.file) for scope in self._scopes):
                self.add_import(HELPER_MODULE, HELPER)
            return HELPER
        alias, n = HELPER_ALIAS, 1
        while any(scope[alias] and not _bound_to_helper(scope, alias, self.file) for scope in self._scopes):
            n += 1
            alias = f"{HELPER_ALIAS}{n}"
        self.add_import(HELPER_MODULE, HELPER, alias)
        return alias


class _Comments(cst.CSTVisitor):
    def __init__(self) -> None:
        super().__init__()
        self.found = False

    def visit_Comment(self, node: cst.Comment) -> None:
        self.found = True


def _has_comment(node: cst.CSTNode) -> bool:
    """Whether a comment sits inside ``node`` (a check written over several lines)."""
    if "#" not in source(node):
        return False  # the common case, without walking: no comment, nor any `#` in a string
    comments = _Comments()
    node.visit(comments)
    return comments.found


def _bound_to_helper(scope: Scope, name: str, file: FileContext) -> bool | None:
    """True: ``name`` is vLLM's is_moe_layer here; False: something else; None: unbound."""
    return bound_to(scope, name, _HELPER_QUALNAMES, file)
