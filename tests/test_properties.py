"""Property-based tests: generated modules, real-looking code with the migration's patterns
spliced in at random, in every style a real file may have (BOM, CRLF or mixed line endings,
tabs, form feeds, trailing whitespace, no final newline, latin-1 with a coding line).

For every module: migrate_source never raises and never fails on valid code; its output
parses; a second run changes nothing; every line that does not mention the migrated names
is kept byte for byte and in order; the file's style survives; and when nothing applies the
bytes are left exactly as they were.

Examples: the 'ci' hypothesis profile (tests/conftest.py; derandomized, so CI is reproducible)
runs 800 in all, most migrated twice, which is what fits in a minute at LibCST's speed;
``pytest --slow`` runs ten times as many, randomly.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

import libcst as cst
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from moe_migrate.codemod.context import FileContext
from moe_migrate.codemod.outcomes import Changed, Unchanged
from moe_migrate.codemod.transform import migrate_source

CONTEXT = FileContext("plugin/models/model.py", "plugin.models.model")

#: A line that mentions one of these may be rewritten, or removed with the import it is in.
MENTIONS = (b"SharedFusedMoE", b"shared_fused_moe", b"FusedMoE", b"fused_moe", b"TYPE_CHECKING", b"SFM")

IDENTIFIERS = ["alpha", "hidden", "router", "config", "layer", "weights", "scale", "x", "num_tokens", "übung", "größe"]
CLASSES = ["Block", "MoEBlock", "Expert", "Model", "Attention", "Gate"]

NEUTRAL = [
    "import os\n",
    "import torch\nimport torch.nn as nn\n",
    "from typing import Any, Optional\n",
    "def {f}({a}, {b}=None):\n{i}\"\"\"Return {a} plus {b}.\"\"\"\n{i}return {a} + ({b} or 0)\n",
    "class {C}(nn.Module):\n{i}def __init__(self, {a}):\n{i}{i}super().__init__()\n{i}{i}self.{a} = {a}\n",
    "{a} = [{n}, {n} * 2, {n}]  # a comment\n",
    "if {a} is not None:\n{i}{b} = {a}\nelse:\n{i}{b} = {n}\n",
    "@torch.no_grad()\ndef {f}(*args, **kwargs):\n{i}with open(args[0]) as handle:\n{i}{i}return handle.read()\n",
    "try:\n{i}import triton\nexcept ImportError:\n{i}triton = None\n",
    "{a} = f\"{b}={{{b}!r}}\"\n",
    "# a comment on its own, mentioning MoE layers and experts\n",
    "{a} = 1 + \\\n{i}{n}\n",
    "{a}: dict[str, int] = {{'k': {n}, 'v': -{n}}}\n",
    "for {a} in range({n}):\n{i}if {a} % 2:\n{i}{i}continue\n{i}{b} = {a}\n",
    "{a} = ({b} := {n}) if {n} else lambda: None\n",
    "\"\"\"A docstring that\nspans lines.\n\"\"\"\n",
    "async def {f}({a}):\n{i}await {a}\n",
]

PATTERNS = [
    "from vllm.model_executor.layers.fused_moe import SharedFusedMoE\n",
    "from vllm.model_executor.layers.fused_moe import FusedMoE, SharedFusedMoE\n",
    "from vllm.model_executor.layers.fused_moe.shared_fused_moe import SharedFusedMoE\n",
    "from vllm.model_executor.layers.shared_fused_moe import SharedFusedMoE\n",
    "from vllm.model_executor.layers.fused_moe import (\n{i}FusedMoE,\n{i}SharedFusedMoE,\n)\n",
    "from vllm.model_executor.layers.fused_moe import SharedFusedMoE as SFM\n{a} = SFM\n",
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n{i}from vllm.model_executor.layers.fused_moe import SharedFusedMoE\n",
    "{a} = SharedFusedMoE(\n{i}shared_experts=None,\n{i}num_experts={n},\n{i}top_k=2,\n)\n",
    "{a} = SharedFusedMoE.make_expert_params_mapping({b}, num_experts={n})\n",
    "class {C}(SharedFusedMoE):\n{i}pass\n",
    "def {f}(self) -> SharedFusedMoE:\n{i}return self.{a}\n",
    "{a}: list[SharedFusedMoE] = []\n",
    "{a}: \"SharedFusedMoE | None\" = None\n",
    "{a} = isinstance({b}, (FusedMoE, SharedFusedMoE))\n",
    "# {a} is a FusedMoE or SharedFusedMoE\n",
]

LOOKALIKES = [
    "log(\"SharedFusedMoE was removed\")\n",
    "class AscendSharedFusedMoE:\n{i}pass\n",
    "{a} = 'shared_fused_moe'\n",
]


@dataclass(frozen=True)
class Module:
    source: bytes
    patterns: int
    bom: bool
    newline: str  # "\n", "\r\n" or "mixed"
    encoding: str


def _fill(template: str, draw, indent: str) -> str:  # type: ignore[no-untyped-def]
    names = draw(st.lists(st.sampled_from(IDENTIFIERS), min_size=2, max_size=2, unique=True))
    return template.format(
        a=names[0],
        b=names[1],
        f=draw(st.sampled_from(["forward", "build", "load_weights", "_helper"])),
        C=draw(st.sampled_from(CLASSES)),
        n=draw(st.integers(0, 4096)),
        i=indent,
    )


def _nest(text: str, indent: str, head: str) -> str:
    body = "".join(indent + line if line.strip() else line for line in text.splitlines(True))
    return head + body + indent + "pass\n"  # a block of only comments would be empty


@st.composite
def modules(draw, patterns: bool = True) -> Module:  # type: ignore[no-untyped-def]
    indent = draw(st.sampled_from(["    ", "\t", "  "]))
    pool = NEUTRAL + LOOKALIKES + (PATTERNS if patterns else [])
    count = draw(st.integers(1, 12))
    chunks, used = [], 0
    for _ in range(count):
        template = draw(st.sampled_from(pool))
        used += template in PATTERNS
        text = _fill(template, draw, indent)
        if draw(st.integers(0, 5)) == 0:
            text = _nest(text, indent, draw(st.sampled_from(["def wrapper():\n", "if True:\n", "class Holder:\n"])))
        chunks.append(text)
        chunks.append(draw(st.sampled_from(["", "\n", "\n\n", "\x0c\n"])))
    text = "".join(chunks)
    lines = text.splitlines(True)
    # Trailing whitespace, except after a backslash continuation (it would end it).
    spaces = draw(st.lists(st.sampled_from(["", "", "", " ", "\t", "   "]), min_size=len(lines), max_size=len(lines)))
    lines = [
        line[:-1] + pad + "\n" if line.endswith("\n") and not line.endswith("\\\n") else line
        for line, pad in zip(lines, spaces)
    ]
    newline = draw(st.sampled_from(["\n", "\r\n", "mixed"]))
    if newline == "mixed":
        ends = draw(st.lists(st.booleans(), min_size=len(lines), max_size=len(lines)))
        lines = [line[:-1] + "\r\n" if crlf and line.endswith("\n") else line for line, crlf in zip(lines, ends)]
    elif newline == "\r\n":
        lines = [line[:-1] + "\r\n" if line.endswith("\n") else line for line in lines]
    text = "".join(lines)
    if draw(st.booleans()):
        text = text.rstrip("\r\n")
    encoding = "utf-8"
    if draw(st.booleans()):
        try:
            data = ("# -*- coding: latin-1 -*-" + ("\r\n" if newline == "\r\n" else "\n") + text).encode("latin-1")
            encoding = "latin-1"
        except UnicodeEncodeError:
            data = text.encode()
    else:
        data = text.encode()
    bom = encoding == "utf-8" and draw(st.booleans())
    return Module((b"\xef\xbb\xbf" if bom else b"") + data, used, bom, newline, encoding)


def _parses(source: bytes) -> None:
    ast.parse(source)
    cst.parse_module(source)


def _kept_in_order(before: bytes, after: bytes) -> None:
    """Every line of ``before`` that mentions no migrated name is in ``after``, in order."""
    bom = b"\xef\xbb\xbf"  # on the first line, whichever that is (_style_kept checks it)
    before, after = before.removeprefix(bom), after.removeprefix(bom)
    lines = after.splitlines(True)
    if before.endswith((b"\n", b"\r")) or not lines:
        kept = lines
    else:  # no final newline: when the last statement goes, the one before loses its newline
        kept = lines[:-1] + [lines[-1] + b"\n", lines[-1] + b"\r\n", lines[-1]]
    remaining = iter(kept)
    for line in before.splitlines(True):
        if any(name in line for name in MENTIONS) or not line.strip(b" \t\r\n\x0c)(,"):
            continue
        assert any(candidate == line for candidate in remaining), f"lost or changed: {line!r}"


def _style_kept(module: Module, after: bytes) -> None:
    assert after.startswith(b"\xef\xbb\xbf") == module.bom
    if module.newline == "\r\n":
        assert after.count(b"\n") == after.count(b"\r\n"), "a line ending was changed"
    if module.newline == "\n":
        assert b"\r" not in after
    if module.encoding == "latin-1":
        after.decode("latin-1")
        assert after.splitlines()[0] == b"# -*- coding: latin-1 -*-"


#: What the search found once; kept as regressions.
FOUND = [
    # A comment above an import that goes (FusedMoE is imported already) used to go with it.
    Module(
        b"x = 1\n# a comment on its own\nfrom vllm.model_executor.layers.fused_moe import SharedFusedMoE\n"
        b"from vllm.model_executor.layers.fused_moe import (\n    FusedMoE,\n    SharedFusedMoE,\n)\n",
        2, False, "\n", "utf-8",
    ),
    # LibCST prints a blank line followed by a whitespace-only line without the blank line.
    Module(
        b"import os\ndef forward(alpha, hidden=None):\n    return alpha\n \n"
        b"from vllm.model_executor.layers.fused_moe import SharedFusedMoE\n"
        b"from vllm.model_executor.layers.fused_moe import FusedMoE, SharedFusedMoE\n\n \n",
        2, False, "\n", "utf-8",
    ),
    # No final newline: when the last statement goes, the one before loses its newline.
    Module(
        b"from vllm.model_executor.layers.fused_moe import FusedMoE, SharedFusedMoE\nimport os\n"
        b"from vllm.model_executor.layers.fused_moe import SharedFusedMoE",
        2, False, "\n", "utf-8",
    ),
    # The BOM stays on the first line when the first line goes.
    Module(
        b"\xef\xbb\xbffrom vllm.model_executor.layers.fused_moe import SharedFusedMoE\nimport os\nimport os\n"
        b"def wrapper():\n    import os\n    pass\nfrom vllm.model_executor.layers.fused_moe import (\n"
        b"    FusedMoE,\n    SharedFusedMoE,\n)\n",
        2, True, "\n", "utf-8",
    ),
    # LibCST drops that blank line after a simple statement, not after a block: once the
    # import goes, the real file's blank line is the one to keep.
    Module(
        b"def forward(alpha):\n  return alpha\nfrom vllm.model_executor.layers.fused_moe import (\n"
        b"  FusedMoE,\n  SharedFusedMoE,\n)\n\n\nclass Block(SharedFusedMoE):\n  pass\n\n\n"
        b"from vllm.model_executor.layers.fused_moe import SharedFusedMoE\n\n   \n",
        3, False, "\n", "utf-8",
    ),
]


@settings(max_examples=settings().max_examples * 5)
@given(module=modules())
@example(module=FOUND[0])
@example(module=FOUND[1])
@example(module=FOUND[2])
@example(module=FOUND[3])
@example(module=FOUND[4])
def test_migration_properties(module: Module, all_rules) -> None:
    _parses(module.source)  # the generator makes valid Python, so any failure is ours
    outcome = migrate_source(module.source, all_rules, CONTEXT)
    assert isinstance(outcome, (Changed, Unchanged)), outcome
    event(f"{type(outcome).__name__}, {module.newline!r}, {module.encoding}")
    if isinstance(outcome, Unchanged):
        return
    assert outcome.before == module.source
    _parses(outcome.after)
    _kept_in_order(module.source, outcome.after)
    _style_kept(module, outcome.after)
    again = migrate_source(outcome.after, all_rules, CONTEXT)
    assert isinstance(again, Unchanged), "a second run changed it again"


@settings(max_examples=settings().max_examples * 3)
@given(module=modules(patterns=False))
def test_nothing_applies_nothing_changes(module: Module, all_rules) -> None:
    outcome = migrate_source(module.source, all_rules, CONTEXT)
    assert isinstance(outcome, Unchanged), outcome


@settings(max_examples=settings().max_examples * 2)
@given(module=modules())
@example(module=FOUND[4])
def test_slicing_gives_the_whole_file_s_outcome(module: Module, all_rules) -> None:
    """Sliced as finely as the rules allow (even where most lines are kept), the outcome is
    byte for byte the one the whole file gives: lines, markers, CRLF, tabs and all."""
    from moe_migrate import rules
    from moe_migrate.codemod import slicing

    focus = rules.focus(list(rules.RULE_IDS))
    whole = migrate_source(module.source, all_rules, CONTEXT)
    limit, slicing.MAX_KEPT = slicing.MAX_KEPT, 1.01
    try:
        sliced = migrate_source(module.source, all_rules, CONTEXT, focus)
    finally:
        slicing.MAX_KEPT = limit
    event("sliced" if slicing.plan(module.source, ast.parse(module.source), focus) else "not sliced")
    assert sliced == whole
