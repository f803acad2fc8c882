"""shared-fused-moe-not-trivial: the rename is safe only if vLLM's class was a thin subclass."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

import libcst as cst
from libcst.helpers import get_full_name_for_node

from moe_migrate.codemod.context import FileContext
from moe_migrate.codemod.outcomes import FileOutcome
from moe_migrate.codemod.rule import Flagged, Rule, Unchanged
from moe_migrate.codemod.tree import Tree
from moe_migrate.codemod.scopes import Scope
from moe_migrate.rules._vllm import NEW_CLASS, OLD_CLASS, OLD_MODULES, analyse, import_target

#: The rule that finds the call sites unpacking or indexing a SharedFusedMoE layer's output.
SITES = "moe-output-tuple"

_TRIVIAL = (
    "from vllm.model_executor.layers.fused_moe.layer import FusedMoE\n\n\n"
    "class SharedFusedMoE(FusedMoE):\n"
    '    """Kept for compatibility."""\n\n'
    "    def forward(self, hidden_states, router_logits):\n"
    "        return super().forward(hidden_states=hidden_states, router_logits=router_logits)\n"
)
_WRAPPER = (
    "import torch\n\n\n"
    "class SharedFusedMoE(torch.nn.Module):\n"
    "    def forward(self, hidden_states, router_logits):\n"
    "        return super().forward(hidden_states=hidden_states, router_logits=router_logits)\n"
)
_PAIR = (
    "from vllm.model_executor.layers.fused_moe.layer import FusedMoE\n\n\n"
    "class SharedFusedMoE(FusedMoE):\n"
    "    def __init__(self, shared_experts, use_overlapped=True, **kwargs):\n"
    "        super().__init__(**kwargs)\n"
    "        self.use_overlapped = use_overlapped\n\n"
    "    def forward(self, hidden_states, router_logits):\n"
    "        shared_out = self._shared_experts(hidden_states)\n"
    "        fused_out = super().forward(hidden_states=hidden_states, router_logits=router_logits)\n"
    "        return shared_out, fused_out\n"
)
def _is_super_forward_return(statement: cst.BaseStatement) -> bool:
    """``return super().forward(...)``"""
    if not isinstance(statement, cst.SimpleStatementLine) or len(statement.body) != 1:
        return False
    ret = statement.body[0]
    if not isinstance(ret, cst.Return) or not isinstance(ret.value, cst.Call):
        return False
    func = ret.value.func
    return (
        isinstance(func, cst.Attribute)
        and func.attr.value == "forward"
        and isinstance(func.value, cst.Call)
        and get_full_name_for_node(func.value.func) == "super"
    )


def _is_docstring(statement: cst.BaseStatement) -> bool:
    return (
        isinstance(statement, cst.SimpleStatementLine)
        and len(statement.body) == 1
        and isinstance(statement.body[0], cst.Expr)
        and isinstance(statement.body[0].value, (cst.SimpleString, cst.ConcatenatedString))
    )


def _returns_pair(function: cst.FunctionDef) -> bool:
    class Finder(cst.CSTVisitor):
        found = False

        def visit_Return(self, node: cst.Return) -> None:
            if isinstance(node.value, cst.Tuple) and len(node.value.elements) == 2:
                self.found = True

        def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
            return node is function  # not into nested functions

    finder = Finder()
    function.visit(finder)
    return finder.found


@dataclass(frozen=True)
class _Module:
    """What a class's bases can name in its module: its classes, and its scope and file, where
    its imports are read."""

    classes: Mapping[str, cst.ClassDef]
    scope: Scope | None = None
    file: FileContext | None = None


def _base_kind(base: cst.BaseExpression, module: _Module, owner: cst.ClassDef) -> tuple[str, str]:
    """What a base of ``owner`` is, and its name: "fused" (vLLM's ``FusedMoE``, also through an
    alias), "local" (a class of this module), "vllm" (another class of the tree, which this
    check does not follow) or "other". A class's own name among its bases is what the name
    meant before the class (``class FusedMoE(FusedMoE)``)."""
    name = get_full_name_for_node(base) or ""
    head, _, rest = name.partition(".")
    if name in module.classes and name != owner.name.value:
        return "local", name
    target = None
    if module.scope is not None and module.file is not None:
        target = import_target(module.scope, head, module.file, lambda a: a.node is owner)
    if target is not None:
        full = target + ("." + rest if rest else "")
        if full.startswith("vllm.") and full.rpartition(".")[2] == NEW_CLASS:
            return "fused", full
        return ("vllm" if full.startswith("vllm.") else "other"), full
    return ("fused" if name.rpartition(".")[2] == NEW_CLASS else "other"), name


def _local_bases(cls: cst.ClassDef, module: _Module) -> list[cst.ClassDef]:
    kinds = [_base_kind(base.value, module, cls) for base in cls.bases]
    return [module.classes[name] for kind, name in kinds if kind == "local"]


def _derivation(cls: cst.ClassDef, module: _Module, seen: frozenset[int] = frozenset()) -> str:
    """"fused" when a base is vLLM's ``FusedMoE`` or a class of this module deriving from it,
    else "vllm" when a base is a class of the tree this check does not follow, else "other"."""
    kinds = {kind for kind, _ in (_base_kind(b.value, module, cls) for b in cls.bases)}
    found = {_derivation(base, module, seen | {id(cls)}) for base in _local_bases(cls, module) if id(base) not in seen}
    for kind in ("fused", "vllm"):
        if kind in kinds | found:
            return kind
    return "other"


def what_it_overrides(cls: cst.ClassDef, module: _Module | None = None) -> list[str]:
    """What the class does beyond a ``forward`` that only returns ``super().forward(...)``,
    with what the classes of this module it derives from do (``module``: its classes and
    imports)."""
    module = module or _Module({}, {})
    out = []
    derivation = _derivation(cls, module)
    bases = ", ".join(_base_kind(base.value, module, cls)[1] for base in cls.bases) or "none"
    if derivation == "other":
        out.append(
            f"it does not derive from `{NEW_CLASS}` (bases: {bases}), so its uses renamed to "
            f"`{NEW_CLASS}` build a different layer, whose `shared_experts=` this tree may not "
            "handle"
        )
    elif derivation == "vllm":
        out.append(
            f"it derives from a class of another module of this tree (bases: {bases}), which this "
            f"check does not follow: renamed, its uses build a plain `{NEW_CLASS}`, without what "
            "that class adds"
        )
    else:  # a mixin beside FusedMoE may override what the rename assumes
        for base in cls.bases:
            kind, name = _base_kind(base.value, module, cls)
            if kind in ("vllm", "other") and name != "object":
                out.append(
                    f"it also derives from `{name}`, which this check does not follow: renamed, "
                    f"its uses build a plain `{NEW_CLASS}`, without what `{name}` adds"
                )
    out += _own_overrides(cls)
    todo, seen = _local_bases(cls, module), {id(cls)}
    while todo:
        base = todo.pop(0)
        if id(base) not in seen:
            seen.add(id(base))
            out += [f"its base `{base.name.value}`: {what}" for what in _own_overrides(base)]
            todo += _local_bases(base, module)
    return out


def _own_overrides(cls: cst.ClassDef) -> list[str]:
    """What the body of ``cls`` does beyond a ``forward`` returning ``super().forward(...)``."""
    out = []
    for statement in cls.body.body:
        if _is_docstring(statement) or (
            isinstance(statement, cst.SimpleStatementLine)
            and all(isinstance(s, cst.Pass) for s in statement.body)
        ):
            continue
        if isinstance(statement, cst.FunctionDef):
            body = [s for s in statement.body.body if not _is_docstring(s)]
            name = statement.name.value
            if name == "forward" and len(body) == 1 and _is_super_forward_return(body[0]):
                continue
            if name == "forward" and _returns_pair(statement):
                out.append("`forward` returns a (shared_out, fused_out) pair")
            elif name == "__init__":
                params = [
                    p.name.value
                    for p in statement.params.params + statement.params.kwonly_params
                    if p.name.value != "self"
                ]
                out.append(f"`__init__` takes its own parameters ({', '.join(params) or 'none'})")
            else:
                out.append(f"it overrides `{name}`")
        else:
            out.append(f"its body has more than methods (line starting `{cst.Module([]).code_for_node(statement).strip().splitlines()[0][:40]}`)")
    return out


class SharedFusedMoeNotTrivial(Rule):
    """Check that vLLM's `SharedFusedMoE` is the thin subclass the rename assumes.

    Why: the rename is exact only where `SharedFusedMoE` adds nothing to `FusedMoE` (a
    `forward` that returns `super().forward(...)`). Where the tree's own definition still does
    more, for example returns a `(shared_out, fused_out)` pair, as vLLM 0.19 did, or takes
    constructor parameters such as `use_overlapped`, code that relies on that behaviour
    changes meaning after the rename. The same goes for what a base class of the module adds,
    and for a class that does not derive from vLLM's `FusedMoE` at all (bases are resolved
    through imports); a base from another module of the tree, or a mixin beside `FusedMoE`,
    is named as not followed. The finding is reported at the class definition and
    names every call site that unpacks or indexes the layer's output; each of those is also
    a finding of its own (`moe-output-tuple`, which always runs with this rule), so a human
    can update it: `FusedMoE` returns one tensor with the shared experts' output added.

    Fix safety: report only. The renames are still applied (the user asked for them); the
    exit code says a human must look. It applies only to a tree that defines vLLM's class
    (vLLM itself or a fork).
    """

    ID = "shared-fused-moe-not-trivial"
    WHOLE_FILE = True
    EXAMPLES = (
        Flagged(_PAIR, lines=(4,), note="vLLM 0.19's forward returns a pair", module=OLD_MODULES[0]),
        Flagged(_WRAPPER, lines=(4,), note="a wrapper, not a FusedMoE at all", module=OLD_MODULES[0]),
        Unchanged(_TRIVIAL, "the thin subclass", module=OLD_MODULES[0]),
        Unchanged(
            "from vllm.model_executor.layers.fused_moe.layer import FusedMoE as _FusedMoE\n\n\n"
            "class _Base(_FusedMoE):\n    pass\n\n\n"
            "class SharedFusedMoE(_Base):\n"
            "    def forward(self, hidden_states, router_logits):\n"
            "        return super().forward(hidden_states=hidden_states, router_logits=router_logits)\n",
            "the thin subclass, through an alias and a base of this module",
            module=OLD_MODULES[0],
        ),
        Flagged(
            "from vllm.model_executor.layers.fused_moe.layer import FusedMoE\n\n\n"
            "class _Base(FusedMoE):\n"
            "    def forward(self, hidden_states, router_logits):\n"
            "        out = super().forward(hidden_states=hidden_states, router_logits=router_logits)\n"
            "        return self.shared_experts(hidden_states), out\n\n\n"
            "class SharedFusedMoE(_Base):\n    pass\n",
            lines=(10,),
            note="a base of this module returns the pair",
            module=OLD_MODULES[0],
        ),
        Flagged(
            "from torch.nn import Module as _FusedMoE\n\n\n"
            "class SharedFusedMoE(_FusedMoE):\n    pass\n",
            lines=(4,),
            note="a base that is only named like FusedMoE",
            module=OLD_MODULES[0],
        ),
        Flagged(
            "from mylib.moe import FusedMoE\n\n\nclass SharedFusedMoE(FusedMoE):\n    pass\n",
            lines=(4,),
            note="a FusedMoE that is not vLLM's",
            module=OLD_MODULES[0],
        ),
        Flagged(
            "from vllm.model_executor.layers.fused_moe.base import _Base\n\n\n"
            "class SharedFusedMoE(_Base):\n    pass\n",
            lines=(4,),
            note="a base from another module of the tree, which the check does not follow",
            module=OLD_MODULES[0],
        ),
        Flagged(
            "from vllm.model_executor.layers.fused_moe.layer import FusedMoE\n"
            "from vllm.model_executor.layers.fused_moe.mixins import PairMixin\n\n\n"
            "class SharedFusedMoE(PairMixin, FusedMoE):\n    pass\n",
            lines=(5,),
            note="a mixin beside FusedMoE, which the check does not follow",
            module=OLD_MODULES[0],
        ),
        Unchanged(
            "try:\n    from vllm.model_executor.layers.fused_moe.layer import FusedMoE as _F\n"
            "except ImportError:\n    raise\n\n\nclass SharedFusedMoE(_F):\n    pass\n",
            "FusedMoE imported inside a try block",
            module=OLD_MODULES[0],
        ),
    )

    @classmethod
    def applies_to(cls, file: FileContext) -> bool:
        return file.module in OLD_MODULES

    def visit_Module(self, node: cst.Module) -> None:
        classes = {s.name.value: s for s in node.body if isinstance(s, cst.ClassDef)}
        self._module = _Module(classes, self.shared(analyse).scopes.scopes[0], self.file)  # the module's scope

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        if node.name.value != OLD_CLASS:
            return False
        overrides = what_it_overrides(node, self._module)
        if overrides:
            self.flag(
                node,
                f"vLLM's `{OLD_CLASS}` in this tree is not a thin subclass of `{NEW_CLASS}`: "
                f"{'; '.join(overrides)}. Renaming it to `{NEW_CLASS}` changes behaviour.",
                fix=f"Update the code that relies on the old behaviour (`{SITES}` reports each "
                f"call site that unpacks or indexes the output); `{NEW_CLASS}` returns one tensor "
                "with the shared experts' output already added.",
            )
        return False

    @classmethod
    def finish(cls, tree: Tree) -> Mapping[str, FileOutcome]:
        """Name, in the finding at the definition, every call site that relies on it."""
        sites = sorted(
            f"{f.path}:{f.line}"
            for outcome in tree.outcomes.values()
            for f in outcome.findings
            if f.rule == SITES
        )
        if not sites:
            return {}
        listing = f" Call sites that rely on it ({len(sites)}): {', '.join(sites)}."
        updates: dict[str, FileOutcome] = {}
        for path, outcome in tree.outcomes.items():
            findings = tuple(
                replace(f, message=f.message + listing) if f.rule == cls.ID else f for f in outcome.findings
            )
            if findings != outcome.findings:
                updates[path] = replace(outcome, findings=findings)
        return updates
