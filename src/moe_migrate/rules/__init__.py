"""The rules: one module per rule, module name == rule id with ``_`` for ``-``.

``CATALOG`` is read before any rule module is imported: it is all the prefilter needs, so a
file without a trigger never costs a LibCST import. A meta-test keeps it in step with the
modules.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from moe_migrate.codemod.rule import Rule
    from moe_migrate.codemod.slicing import Focus


@dataclass(frozen=True)
class RuleSpec:
    """What is known of a rule without importing it."""

    id: str
    #: Byte strings without which the rule cannot match; a file with none is never parsed,
    #: and a statement with none (nor a name derived from them) is left out of what LibCST
    #: parses (:mod:`moe_migrate.codemod.slicing`). A tuple of byte strings is one trigger that
    #: a file holds only when it contains all of them.
    triggers: tuple[bytes | tuple[bytes, ...], ...]
    #: Rules that must run whenever this one does (they edit the same bindings).
    requires: tuple[str, ...] = ()
    #: The rule has a tree-level step (``finish``), run once after the per-file pass.
    tree: bool = False
    #: Names whose bindings the rule checks wherever they are, trigger or not (a statement
    #: binding a name that contains one of these is always parsed).
    names: tuple[str, ...] = ()
    #: What a statement that matters to the rule mentions, where that is narrower than the
    #: triggers' strings (default: all of them).
    focus: tuple[bytes, ...] | None = None

    @property
    def words(self) -> tuple[bytes, ...]:
        """The strings statements are kept for when a file is sliced."""
        if self.focus is not None:
            return self.focus
        return tuple(word for t in self.triggers for word in ((t,) if isinstance(t, bytes) else t))

    @property
    def module(self) -> str:
        return f"{__name__}.{self.id.replace('-', '_')}"


_SHARED_FUSED_MOE = (b"SharedFusedMoE", b"shared_fused_moe")
#: The renames check what ``FusedMoE`` (and their fallback alias ``VllmFusedMoE``) is bound to.
_RENAMED_TO = ("FusedMoE",)

CATALOG: tuple[RuleSpec, ...] = (
    RuleSpec("shared-fused-moe-import", _SHARED_FUSED_MOE, ("shared-fused-moe-reference",), names=_RENAMED_TO),
    # A table filled row by row has its FusedMoE row in a statement of its own: `t[FusedMoE] = h`.
    RuleSpec(
        "shared-fused-moe-reference",
        _SHARED_FUSED_MOE,
        ("shared-fused-moe-import",),
        names=_RENAMED_TO,
        focus=(*_SHARED_FUSED_MOE, b"FusedMoE]", b"FusedMoE:"),
    ),
    # Rewrites the block; the import and its uses are the renames' work.
    RuleSpec(
        "shared-fused-moe-import-fallback",
        (b"SharedFusedMoE",),
        ("shared-fused-moe-import", "shared-fused-moe-reference"),
    ),
    # Findings: each needs the class named in code or in a string. The patch rule also reports
    # dotted strings that name only the deleted module ("...fused_moe.shared_fused_moe").
    RuleSpec("shared-fused-moe-subclass", (b"SharedFusedMoE",)),
    RuleSpec("shared-fused-moe-patch", _SHARED_FUSED_MOE),
    RuleSpec("shared-fused-moe-registry", (b"SharedFusedMoE",)),
    RuleSpec("shared-fused-moe-isinstance", (b"SharedFusedMoE",)),
    # The renames make the class `FusedMoE(..., shared_experts=...)`, whose output is still
    # not a pair: the finding stays until the code that unpacks it is fixed. What matters in
    # such a file is the statement that builds the layer (`class FusedMoE(` does not), and
    # the classes named like `...FusedMoE` that may derive from it.
    RuleSpec(
        "moe-output-tuple",
        (b"SharedFusedMoE", (b"FusedMoE(", b"shared_experts=")),
        names=_RENAMED_TO,
        focus=(b"SharedFusedMoE", b"shared_experts="),
    ),
    # What the renames make of the class is checked too: `use_overlapped=` on a call of
    # `FusedMoE`, the attributes read on a layer built as `FusedMoE(..., shared_experts=...)` or
    # on `self` in a subclass of it (written `x._shared_experts`). Kept of such a file: the
    # statements that name the attributes, and those that build the layer.
    RuleSpec(
        "shared-fused-moe-only-api",
        (b"SharedFusedMoE", (b"FusedMoE", b"use_overlapped"), (b"FusedMoE", b"._shared_experts")),
        names=_RENAMED_TO,
        focus=(b"SharedFusedMoE", b"use_overlapped", b"._shared_experts", b"shared_experts="),
    ),
    # A class-name check needs a string literal of one of vLLM's names: it ends in a quote.
    RuleSpec("moe-class-name-check", (b"FusedMoE'", b'FusedMoE"'), names=("is_moe_layer",)),
    RuleSpec("vllm-remove-shared-fused-moe", _SHARED_FUSED_MOE, tree=True),
    # Lists the call sites that moe-output-tuple finds in its finding at the definition.
    RuleSpec("shared-fused-moe-not-trivial", _SHARED_FUSED_MOE, ("moe-output-tuple",), tree=True),
)

RULE_IDS = tuple(spec.id for spec in CATALOG)


class UnknownRule(ValueError):
    """A rule id that is not in the catalog."""


def spec(rule_id: str) -> RuleSpec:
    for entry in CATALOG:
        if entry.id == rule_id:
            return entry
    raise UnknownRule(f"unknown rule {rule_id!r}; known rules: {', '.join(RULE_IDS)}")


def load(rule_id: str) -> type["Rule"]:
    """Import the rule's module and return its one ``Rule`` subclass."""
    from moe_migrate.codemod.rule import Rule

    module = importlib.import_module(spec(rule_id).module)
    found = [
        obj
        for name, obj in vars(module).items()
        if isinstance(obj, type)
        and issubclass(obj, Rule)
        and obj.__module__ == module.__name__
        and obj.ID == rule_id
        and obj.EXAMPLES
        and not name.startswith("_")
        and name == _class_name(rule_id)
    ]
    if len(found) != 1:
        raise ImportError(f"{module.__name__} must define the Rule {_class_name(rule_id)} with ID {rule_id!r}")
    return found[0]


def _class_name(rule_id: str) -> str:
    """``shared-fused-moe-import`` -> ``SharedFusedMoeImport``."""
    return "".join(part.capitalize() for part in rule_id.split("-"))


def focus(rule_ids: Sequence[str]) -> "Focus":
    """What the rules ``rule_ids`` look at in a file, for slicing it."""
    from moe_migrate.codemod.slicing import Focus

    chosen = [spec(rule_id) for rule_id in rule_ids]
    words = tuple(dict.fromkeys(word for entry in chosen for word in entry.words))
    names = tuple(dict.fromkeys(n for entry in chosen for n in entry.names))
    return Focus(words, names)


def select(selected: list[str] | None, ignored: list[str] | None) -> tuple[list[str], list[str]]:
    """Rule ids to run, in catalog order, and a warning per rule dropped for a dependency.

    ``selected`` empty or None means every rule. A rule's ``requires`` partners run with it;
    ignoring a partner drops the rule too (running half of a coupled pair would leave names
    undefined).
    """
    for rule_id in [*(selected or []), *(ignored or [])]:
        spec(rule_id)
    requires = {entry.id: entry.requires for entry in CATALOG}
    chosen = set(selected or RULE_IDS)
    for rule_id in list(chosen):
        chosen.update(requires[rule_id])
    warnings = []
    ignore = set(ignored or [])
    for rule_id in sorted(chosen):
        missing = [r for r in requires[rule_id] if r in ignore]
        if missing and rule_id not in ignore:
            ignore.add(rule_id)
            warnings.append(f"{rule_id} is not run: it needs {', '.join(missing)}, which is ignored")
    return [r for r in RULE_IDS if r in chosen and r not in ignore], warnings
