"""All rules together: what a findings rule leaves alone keeps its import and all its uses.

Each case runs every rule, checks the output byte for byte, which rules reported, that the
output has no undefined name and that a second run changes nothing.
"""

from __future__ import annotations

import pytest
from pyflakes import api as pyflakes_api
from pyflakes import messages as pyflakes_messages
from pyflakes.reporter import Reporter

from moe_migrate.codemod.outcomes import Changed, Unchanged
from moe_migrate.codemod.testing import run

PKG = "vllm.model_executor.layers.fused_moe"
BOTH = f"from {PKG} import FusedMoE, SharedFusedMoE\n"
FUSED = f"from {PKG} import FusedMoE\n"
OLD = f"from {PKG} import SharedFusedMoE\n"
SAME = None  # the output is the input

_held = [
    pytest.param(
        BOTH + "class X(SharedFusedMoE, FusedMoE):\n    pass\nlayer = SharedFusedMoE()\n",
        SAME,
        {"shared-fused-moe-subclass"},
        id="subclass-keeps-import-and-other-uses",
    ),
    pytest.param(
        "try:\n    import vllm.model_executor.layers.fused_moe.shared_fused_moe as sfm\n"
        "except ImportError:\n    sfm = None\n\n# ``FusedMoE`` (or ``SharedFusedMoE``) by type\n"
        "LAYERS = [sfm.SharedFusedMoE] if sfm is not None else []\n",
        SAME,
        {"shared-fused-moe-import"},
        id="prose-stays-where-the-deleted-module-stays",
    ),
    pytest.param(
        "import vllm.model_executor.layers.fused_moe.layer as fml\n"
        "try:\n    import vllm.model_executor.layers.fused_moe.shared_fused_moe as sfm\n"
        "except ImportError:\n    sfm = None\n"
        "TABLE = {}\nTABLE[fml.FusedMoE] = 'routed'\n"
        "if sfm is not None:\n    TABLE[sfm.SharedFusedMoE] = 'shared'\n",
        SAME,
        {"shared-fused-moe-import"},
        id="a-row-behind-a-kept-deleted-module-is-no-collision",
    ),
    pytest.param(
        "import vllm.model_executor.layers.fused_moe.layer as fml\n" + OLD
        + "TABLE = {}\ndef a():\n    TABLE[fml.FusedMoE] = 'routed'\n"
        "def b(table):\n    TABLE[SharedFusedMoE] = 'shared'\n",
        SAME,
        {"shared-fused-moe-reference"},
        id="one-global-table-filled-from-two-functions",
    ),
    pytest.param(
        BOTH + "HANDLERS = {FusedMoE: 'routed'}\nHANDLERS[SharedFusedMoE] = 'shared'\n",
        SAME,
        {"shared-fused-moe-reference"},
        id="a-dict-literal-then-a-row-assigned",
    ),
    pytest.param(
        BOTH + "class Base:\n    def __init__(self):\n        self.t = {}\n        self.t[FusedMoE] = a\n"
        "class Plugin(Base):\n    def __init__(self):\n        self.t[SharedFusedMoE] = b\n",
        SAME,
        {"shared-fused-moe-reference"},
        id="self-table-filled-by-a-subclass",
    ),
    pytest.param(
        OLD + "from .base import Base\n__all__ = Base.__all__ + ['SharedFusedMoE']\n",
        SAME,
        {"shared-fused-moe-import"},
        id="export-list-built-by-an-expression",
    ),
    pytest.param(
        "import vllm.model_executor.layers.fused_moe.layer as fml\n" + OLD
        + "def outer():\n    m = {}\n    m[fml.FusedMoE] = 'routed'\n"
        "    def inner():\n        m[SharedFusedMoE] = 'shared'\n    return inner\n",
        SAME,
        {"shared-fused-moe-reference"},
        id="a-nested-function-fills-the-outer-table",
    ),
    pytest.param(
        "import vllm.model_executor.layers.fused_moe.layer as fml\n" + OLD
        + "def a():\n    global T\n    T = {}\n    T[fml.FusedMoE] = 'routed'\n"
        "def b():\n    T[SharedFusedMoE] = 'shared'\n",
        SAME,
        {"shared-fused-moe-reference"},
        id="a-global-declared-table",
    ),
    pytest.param(
        OLD + "SharedFusedMoE.forward = f\nlayer = SharedFusedMoE()\n",
        SAME,
        {"shared-fused-moe-patch"},
        id="patched-attribute",
    ),
    pytest.param(
        OLD + "class T(SharedFusedMoE):\n"
        "    def forward_native(self, x, l):\n"
        "        return super(SharedFusedMoE, self).forward_native(x, l)\n",
        SAME,
        {"shared-fused-moe-patch"},
        id="super-of-the-class",
    ),
    pytest.param(
        OLD + "@SharedFusedMoE.register_oot\nclass Mine:\n    pass\n",
        SAME,
        {"shared-fused-moe-registry"},
        id="register-oot-decorator",
    ),
    pytest.param(
        BOTH + "def f(m):\n    return 1 if isinstance(m, SharedFusedMoE) else 2\n",
        SAME,
        {"shared-fused-moe-isinstance"},
        id="isinstance-in-a-conditional-expression",
    ),
    pytest.param(
        f"import {PKG} as fm\nfm.SharedFusedMoE = Mine\nlayer = fm.SharedFusedMoE()\n",
        SAME,
        {"shared-fused-moe-patch"},
        id="module-attribute-chains-held-together",
    ),
    pytest.param(
        f"import {PKG}.shared_fused_moe as sfm\nsfm.SharedFusedMoE.forward = f\n",
        SAME,
        {"shared-fused-moe-patch"},
        id="old-module-binding-keeps-its-import",
    ),
    pytest.param(
        f"import {PKG}.shared_fused_moe\n{PKG}.shared_fused_moe.SharedFusedMoE.forward = f\n",
        SAME,
        {"shared-fused-moe-patch"},
        id="dotted-chain-keeps-its-import",
    ),
    pytest.param(
        f"import {PKG}.shared_fused_moe\nlayer = {PKG}.shared_fused_moe.SharedFusedMoE()\n",
        f"import {PKG}\nlayer = {PKG}.FusedMoE()\n",
        set(),
        id="dotted-chain-migrates-with-its-import",
    ),
    pytest.param(
        f"import sys\nsys.modules['{PKG}.shared_fused_moe'] = stub\n"
        f"from {PKG}.shared_fused_moe import SharedFusedMoE\nlayer = SharedFusedMoE()\n",
        SAME,
        {"shared-fused-moe-patch"},
        id="stubbed-module-keeps-its-import",
    ),
    pytest.param(
        BOTH + "T = {FusedMoE: h, SharedFusedMoE: h}\n"
        "class X(SharedFusedMoE, Other):\n    pass\n",
        SAME,
        {"shared-fused-moe-subclass"},
        id="a-held-file-keeps-its-safe-table-rows",
    ),
    pytest.param(
        FUSED + "try:\n    " + OLD + "except ImportError:\n    SharedFusedMoE = FusedMoE\n"
        "SharedFusedMoE.forward = f\n",
        SAME,
        {"shared-fused-moe-patch"},
        id="a-held-file-keeps-its-safe-fallback",
    ),
    pytest.param(
        OLD + "def f():\n    " + OLD + "    return SharedFusedMoE()\n"
        "class X(SharedFusedMoE, Other):\n    pass\n",
        SAME,
        {"shared-fused-moe-subclass"},
        id="every-binding-of-a-held-file",
    ),
    pytest.param(
        "try:\n    " + OLD + "except ImportError:\n    pass\nlayer = SharedFusedMoE()\n",
        SAME,
        {"shared-fused-moe-import-fallback"},
        id="fallback-that-leaves-it-undefined",
    ),
    pytest.param(
        BOTH + "PAIRS = [(FusedMoE, a), (SharedFusedMoE, b)]\n",
        SAME,
        {"shared-fused-moe-reference"},
        id="table-with-different-handlers",
    ),
    pytest.param(
        OLD + "__all__: list[str] = []\n__all__ += ['SharedFusedMoE']\n__all__.append('SharedFusedMoE')\n"
        "__all__.extend(('SharedFusedMoE',))\nlayer = SharedFusedMoE()\n",
        SAME,
        {"shared-fused-moe-import"},
        id="re-exported-through-__all__",
    ),
    pytest.param(
        FUSED + "try:\n    " + OLD + "except ImportError:\n    SharedFusedMoE = FusedMoE\n"
        "__all__ = ('SharedFusedMoE',)\n",
        SAME,
        {"shared-fused-moe-import"},
        id="a-re-exported-name-keeps-its-safe-fallback",
    ),
]

_migrated = [
    pytest.param(
        OLD + "class Aria(SharedFusedMoE):\n    def weight_loader(self, p, w, s):\n        pass\n",
        FUSED + "class Aria(FusedMoE):\n    def weight_loader(self, p, w, s):\n        pass\n",
        set(),
        id="subclass-overriding-neither-forward-nor-init",
    ),
    pytest.param(
        OLD + "class M:\n    pass\nclass C(M, SharedFusedMoE, metaclass=Meta):\n    pass\n",
        FUSED + "class M:\n    pass\nclass C(M, FusedMoE, metaclass=Meta):\n    pass\n",
        set(),
        id="subclass-with-a-local-mixin",
    ),
    pytest.param(
        BOTH + "def f(m):\n    return isinstance(m, SharedFusedMoE)\n",
        FUSED + "def f(m):\n    return isinstance(m, FusedMoE)\n",
        set(),
        id="isinstance-not-branched-on",
    ),
    pytest.param(
        OLD + "def f(m):\n    if isinstance(m, SharedFusedMoE):\n        return 1\n"
        "def g(m):\n    return isinstance(m, FusedMoE)\n",
        SAME,
        {"shared-fused-moe-isinstance"},
        id="isinstance-branched-on",
    ),
    pytest.param(
        "try:\n    " + f"from {PKG}.shared_fused_moe import SharedFusedMoE\n"
        f"except ImportError:\n    from {PKG}.layer import FusedMoE\n    SharedFusedMoE = FusedMoE\n"
        "layer = SharedFusedMoE()\n",
        FUSED + "layer = FusedMoE()\n",
        set(),
        id="fallback-whose-handler-imports-fusedmoe",
    ),
    pytest.param(
        "try:\n    " + BOTH + f"except ModuleNotFoundError:\n    from {PKG} import FusedMoE\n"
        "    SharedFusedMoE = FusedMoE\nlayer = SharedFusedMoE()\n",
        FUSED + "layer = FusedMoE()\n",
        set(),
        id="fallback-importing-both",
    ),
    pytest.param(
        "import os\n\n# compat\ntry:\n    " + OLD + "except ImportError:\n"
        f"    from {PKG} import FusedMoE as SharedFusedMoE\nlayer = SharedFusedMoE()\n",
        "import os\n\n# compat\n" + FUSED + "layer = FusedMoE()\n",
        set(),
        id="fallback-keeps-its-comment",
    ),
    pytest.param(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    " + OLD + "else:\n    SharedFusedMoE = object\n"
        "def f() -> 'SharedFusedMoE':\n    pass\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    " + FUSED + "else:\n    SharedFusedMoE = object\n"
        "def f() -> 'FusedMoE':\n    pass\n",
        set(),
        id="type-checking-else-is-not-a-fallback",
    ),
    pytest.param(
        BOTH + "T = ((FusedMoE, h), (SharedFusedMoE, h))\nD = {SharedFusedMoE: h, FusedMoE: h}\n",
        FUSED + "T = ((FusedMoE, h),)\nD = {FusedMoE: h}\n",
        set(),
        id="duplicate-rows-go",
    ),
    pytest.param(
        OLD + "def names():\n    __all__ = ['SharedFusedMoE']\n    return __all__\nlayer = SharedFusedMoE()\n",
        FUSED + "def names():\n    __all__ = ['SharedFusedMoE']\n    return __all__\nlayer = FusedMoE()\n",
        set(),
        id="a-local-named-__all__-is-no-export",
    ),
    pytest.param(
        "import vllm.model_executor.layers.fused_moe.layer as fml\n" + OLD
        + "def a():\n    m = {}\n    m[fml.FusedMoE] = 'routed'\n    return m\n"
        "def b():\n    m = {}\n    m[SharedFusedMoE] = 'shared'\n    return m\n",
        "import vllm.model_executor.layers.fused_moe.layer as fml\n" + FUSED
        + "def a():\n    m = {}\n    m[fml.FusedMoE] = 'routed'\n    return m\n"
        "def b():\n    m = {}\n    m[FusedMoE] = 'shared'\n    return m\n",
        set(),
        id="two-tables-of-one-name-in-two-functions",
    ),
    pytest.param(
        "import vllm.model_executor.layers.fused_moe.layer as fml\n" + OLD
        + "def a():\n    m, n = {}, {}\n    m[fml.FusedMoE] = 'routed'\n"
        "def b():\n    m, n = {}, {}\n    m[SharedFusedMoE] = 'shared'\n",
        "import vllm.model_executor.layers.fused_moe.layer as fml\n" + FUSED
        + "def a():\n    m, n = {}, {}\n    m[fml.FusedMoE] = 'routed'\n"
        "def b():\n    m, n = {}, {}\n    m[FusedMoE] = 'shared'\n",
        set(),
        id="locals-bound-by-tuple-assignment-are-two-tables",
    ),
    pytest.param(
        OLD + "def patched_init(self):\n    self.use_overlapped = False\nlayer = SharedFusedMoE()\n",
        FUSED + "def patched_init(self):\n    self.use_overlapped = False\nlayer = FusedMoE()\n",
        set(),
        id="self-outside-any-class",
    ),
]


def _undefined(source: bytes) -> set[str]:
    found: set[str] = set()

    class Collect(Reporter):
        def __init__(self) -> None:
            super().__init__(None, None)

        def flake(self, message) -> None:
            if isinstance(message, pyflakes_messages.UndefinedName):
                found.add(message.message_args[0])

    pyflakes_api.check(source.decode(), "output.py", Collect())
    return found


@pytest.mark.parametrize(("before", "after", "rules"), [*_held, *_migrated])
def test_all_rules_together(all_rules, before: str, after: str | None, rules: set[str]) -> None:
    outcome = run(all_rules, before)
    want = (before if after is None else after).encode()
    got = outcome.after if isinstance(outcome, Changed) else before.encode()
    assert isinstance(outcome, (Changed, Unchanged)), outcome
    assert got.decode() == want.decode()
    assert {f.rule for f in outcome.findings} == rules
    assert _undefined(got) <= _undefined(before.encode())  # the cases use names they never define
    again = run(all_rules, got)
    assert isinstance(again, Unchanged)


#: Code the renames rewrite, whose findings must hold on what they write: a second run, or a
#: CI check after the rewrite, reports the same lines.
_second_run = [
    pytest.param(OLD + "layer = SharedFusedMoE(shared_experts=mlp, use_overlapped=False)\n", id="argument"),
    pytest.param(
        OLD + "def f(mlp):\n    m = SharedFusedMoE(shared_experts=mlp)\n"
        "    return m._shared_experts if m.use_overlapped else None\n",
        id="attributes-of-a-layer",
    ),
    pytest.param(
        OLD + "class NPUMoE(SharedFusedMoE):\n    def shared(self, x):\n        return self._shared_experts(x)\n",
        id="attribute-read-in-a-subclass",
    ),
]


@pytest.mark.parametrize("before", _second_run)
def test_a_second_run_reports_what_the_first_did(all_rules, before: str) -> None:
    first = run(all_rules, before)
    assert isinstance(first, Changed) and first.findings
    second = run(all_rules, first.after)
    assert [(f.rule, f.line) for f in second.findings] == [(f.rule, f.line) for f in first.findings]


_MODULE_IMPORT = (
    "try:\n    import vllm.model_executor.layers.fused_moe.shared_fused_moe as sfm\n"
    "except ImportError:\n    sfm = None\n\n"
)


@pytest.mark.parametrize(
    ("use", "says"),
    [
        ("LAYERS = [sfm.SharedFusedMoE] if sfm is not None else []\n", "tell whether it exists"),
        ("if sfm:\n    LAYERS = [sfm.SharedFusedMoE]\n", "tell whether it exists"),
        ("LAYERS = [sfm.SharedFusedMoE, sfm.helper()]\n", "used here for more than"),
    ],
    ids=["is-not-none", "truth-test", "another-name"],
)
def test_a_kept_deleted_module_is_reported_for_what_it_is_used_for(all_rules, use: str, says: str) -> None:
    assert says in _the_message(all_rules, _MODULE_IMPORT + use, "shared-fused-moe-import")


def _the_message(all_rules, source: str, rule: str) -> str:
    """The one finding of ``rule`` on ``source`` (all rules run), as its message."""
    messages = [f.message for f in run(all_rules, source).findings if f.rule == rule]
    assert len(messages) == 1, messages
    return messages[0]


_DOTTED = '"vllm.model_executor.layers.fused_moe.shared_fused_moe"'


@pytest.mark.parametrize(
    ("use", "says"),
    [
        (f"import sys\nsys.modules[{_DOTTED}] = stub\n", "hides that the real import is gone"),
        (f"import sys\nfrom unittest import mock\nmock.patch.dict(sys.modules, {{{_DOTTED}: stub}})\n", "hides that"),
        (f"import sys\ndel sys.modules[{_DOTTED}]\n", "raises `KeyError`"),
        (f"def t(monkeypatch):\n    monkeypatch.setattr({_DOTTED[:-1]}.SharedFusedMoE.forward\", f)\n", "A patch with this target"),
        (f"import importlib\nm = importlib.import_module({_DOTTED})\n", "importing it fails"),
    ],
    ids=["stub", "patch-dict", "del", "monkeypatch-setattr", "import-by-name"],
)
def test_a_dotted_name_is_reported_for_what_it_does_there(all_rules, use: str, says: str) -> None:
    assert says in _the_message(all_rules, use, "shared-fused-moe-patch")
