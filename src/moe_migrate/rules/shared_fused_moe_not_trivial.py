"""shared-fused-moe-not-trivial: the rename is safe only if vLLM's class was a thin subclass."""

from __future__ import annotations

from typing import Mapping

import libcst as cst
from libcst.helpers import get_full_name_for_node

from moe_migrate.codemod.context import FileContext
from moe_migrate.codemod.outcomes import FileOutcome
from moe_migrate.codemod.rule import Flagged, Rule, Unchanged
from moe_migrate.codemod.tree import Tree
from moe_migrate.rules._vllm import NEW_CLASS, OLD_CLASS, OLD_MODULES, OLD_QUALNAMES, analyse, attribute_head

_TRIVIAL = (
    "from vllm.model_executor.layers.fused_moe.layer import FusedMoE\n\n\n"
    "class SharedFusedMoE(FusedMoE):\n"
    '    """Kept for compatibility."""\n\n'
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
_DEPENDENT = (
    "from vllm.model_executor.layers.fused_moe import SharedFusedMoE\n\n\n"
    "class Block:\n"
    "    def __init__(self):\n"
    "        self.experts = SharedFusedMoE(num_experts=8, top_k=2)\n\n"
    "    def forward(self, x, logits):\n"
    "        out = self.experts(hidden_states=x, router_logits=logits)\n"
    "        shared, routed = out\n"
    "        return shared + routed\n"
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


def what_it_overrides(cls: cst.ClassDef) -> list[str]:
    """What the class does beyond a ``forward`` that only returns ``super().forward(...)``."""
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
    changes meaning after the rename. The finding is reported at the class definition, and
    each call site that unpacks or indexes the layer's output into two values is reported on
    its own, so a human can update it: `FusedMoE` returns one tensor with the shared experts'
    output already added.

    Fix safety: report only. The renames are still applied (the user asked for them); the
    exit code says a human must look. Call sites are reported only when the tree itself
    defines a `SharedFusedMoE` that is not trivial (a plugin's tree is covered by
    `moe-output-tuple`).
    """

    ID = "shared-fused-moe-not-trivial"
    EXAMPLES = (
        Flagged(_PAIR, lines=(4,), note="vLLM 0.19's forward returns a pair", module=OLD_MODULES[0]),
        Flagged(_DEPENDENT, lines=(10,), note="a call site that unpacks the pair"),
        Unchanged(_TRIVIAL, "the thin subclass", module=OLD_MODULES[0]),
    )

    @classmethod
    def applies_to(cls, file: FileContext) -> bool:
        return file.module != OLD_MODULES[0].rpartition(".")[0]  # not the package __init__

    def visit_Module(self, node: cst.Module) -> None:
        analysis = self.shared(analyse)
        self._constructors = {id(ref) for b in analysis.classes for ref in b.references}
        self._packages = {id(ref): b for b in analysis.packages for ref in b.references}
        self._classes: list[dict[str, object]] = []
        self._functions: list[dict[str, str]] = []

    # -- the definition ------------------------------------------------------------------------

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        if self.file.module in OLD_MODULES and node.name.value == OLD_CLASS and not self._classes:
            overrides = what_it_overrides(node)
            if overrides:
                self.flag(
                    node,
                    f"vLLM's `{OLD_CLASS}` in this tree is not a thin subclass of `{NEW_CLASS}`: "
                    f"{'; '.join(overrides)}. Renaming it to `{NEW_CLASS}` changes behaviour.",
                    fix="Review the call sites reported with this rule; they rely on the old "
                    f"behaviour. `{NEW_CLASS}` returns one tensor with the shared experts added.",
                )
        self._classes.append({"layers": set(), "sites": []})

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        scope = self._classes.pop()
        layers = scope["layers"]
        lines: set[int] = set()
        for node, attr, how in scope["sites"]:  # type: ignore[attr-defined]
            if attr not in layers:  # type: ignore[operator]
                continue
            line = self.position(node)[0]
            if line not in lines:
                lines.add(line)  # `out[0] + out[1]` is one site, not two
                self.flag(
                    node,
                    f"{how} the output of `self.{attr}`, built as vLLM's `{OLD_CLASS}`, whose "
                    f"`forward` returned a (shared_out, fused_out) pair; `{NEW_CLASS}` returns "
                    "one tensor with the shared experts' output already added.",
                    fix="Use the single tensor (and drop the addition of the shared output).",
                )

    # -- call sites ------------------------------------------------------------------------------

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self._functions.append({})

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self._functions.pop()

    def _builds_old_class(self, value: cst.BaseExpression) -> bool:
        if not isinstance(value, cst.Call):
            return False
        if id(value.func) in self._constructors:
            return True
        head = attribute_head(value.func)
        binding = self._packages.get(id(head)) if head is not None else None
        if binding is None:
            return False
        name = get_full_name_for_node(value.func) or ""
        return binding.target + name[len(binding.local) :] in OLD_QUALNAMES

    def _layer_call(self, value: cst.BaseExpression) -> str | None:
        """``X`` when ``value`` is ``self.X(...)``, or a local assigned from one."""
        if isinstance(value, cst.Call):
            func = value.func
            if isinstance(func, cst.Attribute) and get_full_name_for_node(func.value) == "self":
                return func.attr.value
        if isinstance(value, cst.Name) and self._functions:
            return self._functions[-1].get(value.value)
        return None

    def visit_Assign(self, node: cst.Assign) -> None:
        if not self._classes:
            return
        scope = self._classes[-1]
        for target in node.targets:
            t = target.target
            if isinstance(t, cst.Attribute) and get_full_name_for_node(t.value) == "self":
                if self._builds_old_class(node.value):
                    scope["layers"].add(t.attr.value)  # type: ignore[attr-defined]
            layer = self._layer_call(node.value)
            if layer is None:
                continue
            if isinstance(t, (cst.Tuple, cst.List)) and len(t.elements) == 2:
                scope["sites"].append((node, layer, "This unpacks"))  # type: ignore[attr-defined]
            elif isinstance(t, cst.Name) and self._functions and isinstance(node.value, cst.Call):
                self._functions[-1][t.value] = layer

    def visit_Subscript(self, node: cst.Subscript) -> None:
        if not self._classes:
            return
        layer = self._layer_call(node.value)
        index = node.slice[0].slice if len(node.slice) == 1 else None
        if layer is not None and isinstance(index, cst.Index) and isinstance(index.value, cst.Integer):
            self._classes[-1]["sites"].append((node, layer, "This indexes"))  # type: ignore[attr-defined]

    @classmethod
    def finish(cls, tree: Tree) -> Mapping[str, FileOutcome]:
        """Keep the call-site findings only where the tree's own definition is not trivial."""
        definitions = {tree.path_of(m) for m in OLD_MODULES} - {None}
        defined_here = any(
            f.rule == cls.ID
            for path in definitions
            if path in tree.outcomes
            for f in tree.outcomes[path].findings  # type: ignore[index]
        )
        return {} if defined_here else tree.without_findings(cls.ID)
