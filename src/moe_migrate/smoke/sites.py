"""Find vLLM ``FusedMoE(...)`` call sites in a tree held in memory and resolve their arguments.

:func:`find_sites` is pure analysis: bytes in, :class:`Site` values out. It never imports torch,
never touches the disk and never raises on a file it cannot parse (that file simply has no
sites; the engine has already reported it as ``Failed``), so the signature check can run it
cheaply.

A call is a site when its callee is vLLM's ``FusedMoE`` by qualified name: imported from
``vllm.model_executor.layers.fused_moe`` or its ``layer`` module, under any alias, through a
module attribute, or by a relative import inside a vLLM tree. A plugin's own class that happens to
be called ``FusedMoE`` is not a site, and neither is a call of a subclass (Aria's
``AriaFusedMoE``, ``ZeroExpertFusedMoE``): their constructors take other arguments.

Only the arguments that change what the layer computes (:data:`SEMANTIC`) are resolved into
:attr:`Site.config`; parallelism, quantization, load balancing and ``prefix`` are left out, since
one device ignores them.

Each keyword argument is resolved by a small abstract interpreter that runs the enclosing function
from its first statement up to the call:

- literals as written; ``config.x``, ``hf_config.x``, ``self.config.x`` and
  ``getattr(config, "x", default)`` against the model's tiny config (:mod:`.configs`);
- ``self.x`` and local names followed to their assignments (``if`` tests are evaluated when they
  resolve; otherwise both branches run and must agree); ``self.x`` assigned in another method of
  the same class is followed there;
- a parameter of the enclosing ``__init__`` (or module function) is followed to the calls of that
  class (or function) in the same file, one level deep (Mixtral's ``MixtralMoE(num_experts=...)``);
  else its default is used and the argument counts as assumed, unless the ``if`` that holds the
  call contradicts that default;
- module-level functions of the same file are run on their arguments (Grok-1's
  ``_get_num_experts(config)``);
- conditional expressions, comparisons, arithmetic, ``isinstance``/``len``/``min``/``max`` when
  their operands resolve; a few one-device facts (tensor-parallel world size 1, ROCm AITER off);
- module-valued arguments (``shared_experts=``, ``gate=``, ``routed_input_transform=``,
  ``e_score_correction_bias=``) resolve to :data:`PRESENT` or ``None``;
  ``custom_routing_function=`` to the dotted name of the function passed.

Anything that does not resolve takes the model's documented fallback (then the generic one in
``configs/default.json``) and is listed in :attr:`Site.assumed`, with the reason in
:attr:`Site.notes`.

Why :mod:`ast` and not LibCST: LibCST's scope metadata costs about half a second per vLLM model
file (27 s for the 49 files that mention ``FusedMoE``, against 0.35 s with :mod:`ast`), and this
runs over whole trees before every smoke test. Scoping here is the subset Python's own rules need
for callee names: function scopes, the module scope, and class bodies only for their own
statements.
"""

from __future__ import annotations

import ast
import io
import operator
import tokenize
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Callable

from moe_migrate.smoke.configs import TinyConfig, config_for

#: Qualified names of vLLM's FusedMoE. The package re-exports the class from ``layer``.
TARGETS = frozenset(
    {
        "vllm.model_executor.layers.fused_moe.FusedMoE",
        "vllm.model_executor.layers.fused_moe.layer.FusedMoE",
    }
)

#: Value of a module-valued argument that resolves to some object (the harness builds a small one).
PRESENT = "present"

#: ``FusedMoE.__init__``'s parameters in vLLM's order, used to name positional arguments.
POSITIONAL_ORDER = (
    "num_experts",
    "top_k",
    "hidden_size",
    "intermediate_size",
    "params_dtype",
    "reduce_results",
    "renormalize",
    "use_grouped_topk",
    "num_expert_group",
    "topk_group",
    "quant_config",
    "tp_size",
    "ep_size",
    "dp_size",
    "pcp_size",
    "prefix",
    "custom_routing_function",
    "scoring_func",
    "routed_scaling_factor",
    "e_score_correction_bias",
    "apply_router_weight_on_input",
    "activation",
    "is_act_and_mul",
)

#: Arguments that change what the layer computes, with the type they must resolve to. These
#: (and only these) are put in :attr:`Site.config` and passed to the bundled layer.
SEMANTIC: Mapping[str, str] = {
    "num_experts": "int",
    "top_k": "int",
    "hidden_size": "int",
    "intermediate_size": "int",
    "renormalize": "bool",
    "use_grouped_topk": "bool",
    "num_expert_group": "int?",
    "topk_group": "int?",
    "custom_routing_function": "function",
    "scoring_func": "str",
    "routed_scaling_factor": "float",
    "e_score_correction_bias": "module",
    "apply_router_weight_on_input": "bool",
    "activation": "str",
    "is_act_and_mul": "bool",
    "has_bias": "bool",
    "gate": "module",
    "shared_experts": "module",
    "routed_input_transform": "module",
}

#: Arguments without which the layer cannot be built; assumed when a call does not give them.
REQUIRED = ("num_experts", "top_k", "hidden_size", "intermediate_size")

#: Names that conventionally hold the model's Hugging Face config.
_CONFIG_NAMES = frozenset({"config", "hf_config", "text_config", "hf_text_config"})

#: How deep parameters are followed into callers (1: the calls of the enclosing class).
_CALLER_DEPTH = 1


@dataclass(frozen=True)
class Keyword:
    """One keyword argument as written at a site, with its position (1-based, end exclusive)."""

    name: str
    line: int
    column: int
    end_line: int
    end_column: int


@dataclass(frozen=True)
class Site:
    """One call of vLLM's ``FusedMoE`` and the tiny configuration it resolves to.

    Frozen and picklable; ``config`` is a tuple of pairs so that sites hash. Positions are 1-based
    lines and columns, as in :class:`~moe_migrate.codemod.outcomes.Finding`.
    """

    #: POSIX path relative to the run's root.
    path: str
    line: int
    column: int
    end_line: int
    end_column: int
    #: Innermost enclosing class, ``None`` at module or function level.
    class_name: str | None
    #: Key of the tiny config the arguments were resolved against (``default`` when unknown).
    model: str
    #: The callee as written, e.g. ``FusedMoE`` or ``fused_moe.FusedMoE``.
    callee: str
    #: Keyword arguments as written, in order (what the signature check reads).
    keywords: tuple[Keyword, ...]
    #: Number of positional arguments (their names are taken from :data:`POSITIONAL_ORDER`).
    positional: int
    #: Semantic arguments resolved to plain values, :data:`PRESENT` or a function's dotted name.
    config: tuple[tuple[str, object], ...]
    #: Names in ``config`` whose values are fallbacks, not what the call resolves to.
    assumed: tuple[str, ...] = ()
    #: Why each assumption was made, and anything else worth a reader's attention.
    notes: tuple[str, ...] = ()

    @property
    def kwargs(self) -> dict[str, object]:
        """The resolved configuration as keyword arguments for the bundled layer."""
        return dict(self.config)


def find_sites(sources: Mapping[str, bytes]) -> list[Site]:
    """Every call of vLLM's ``FusedMoE`` in ``sources``, sorted by path and position.

    ``sources`` maps POSIX paths relative to the run's root to file bytes; only ``.py`` files that
    mention ``FusedMoE`` are parsed. Never raises for a file's content.
    """
    found: list[Site] = []
    for path in sorted(sources):
        data = sources[path]
        if path.endswith(".py") and b"FusedMoE" in data:
            found.extend(sites_in_file(path, data))
    return sorted(found, key=lambda site: (site.path, site.line, site.column))


def sites_in_file(path: str, data: bytes) -> list[Site]:
    """The sites in one file; empty when the file does not parse."""
    try:
        module = _Module(path, data)
    except (SyntaxError, ValueError, UnicodeError, LookupError, RecursionError):
        return []
    return [module.site(call, chain) for call, chain in module.fused_moe_calls()]


# --------------------------------------------------------------------------------------------
# Values of the abstract interpreter
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Unknown:
    """A value the interpreter cannot know, and why."""

    reason: str


@dataclass(frozen=True)
class _Ref:
    """A module, class or function, by dotted name."""

    name: str


@dataclass(frozen=True)
class _Obj:
    """Some object that is not ``None`` (an unknown call's result, a parameter tensor)."""

    text: str


@dataclass(frozen=True)
class _Config:
    """The model's tiny Hugging Face config."""

    tiny: TinyConfig


class _Self:
    """The instance under construction."""


@dataclass(frozen=True)
class _Soft:
    """A stored value that rests on assumptions (a parameter's default); read with the reasons."""

    value: object
    soft: tuple[str, ...]


def _soften(value: object, soft: tuple[str, ...]) -> object:
    if not soft or isinstance(value, _Unknown):
        return value
    if isinstance(value, _Soft):
        return _Soft(value.value, tuple(dict.fromkeys(value.soft + soft)))
    return _Soft(value, soft)


def _soft_of(value: object) -> tuple[str, ...]:
    return value.soft if isinstance(value, _Soft) else ()


#: Environment key under which a ``return`` statement leaves its value.
_RETURN = "<return>"


_SELF = _Self()

_BINARY: Mapping[type, Callable[[object, object], object]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_COMPARE: Mapping[type, Callable[[object, object], object]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,  # type: ignore[operator]  # guarded by the try in _compare
    ast.NotIn: lambda a, b: a not in b,  # type: ignore[operator]  # same
}
_TYPES: Mapping[str, type] = {
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "list": list,
    "tuple": tuple,
    "dict": dict,
}
_PURE_BUILTINS: Mapping[str, Callable[..., object]] = {
    "len": len,
    "min": min,
    "max": max,
    "int": int,
    "float": float,
    "bool": bool,
    "str": str,
    "abs": abs,
    "round": round,
    "sum": sum,
    "any": any,
    "all": all,
}

#: One-device facts: calls (matched by their last dotted name) whose value the smoke test knows,
#: because it builds every layer on a single device with vLLM's generic (non-ROCm-AITER) path.
_FACTS: Mapping[str, object] = {
    "get_tensor_model_parallel_world_size": 1,
    "get_tensor_model_parallel_rank": 0,
    "get_pipeline_model_parallel_world_size": 1,
    "is_fused_moe_enabled": False,
    "is_fusion_moe_shared_experts_enabled": False,
    "is_rocm_aiter_moe_enabled": False,
}


def _activation_without_mul(name: object) -> object:
    """vLLM's ``activation_without_mul``: the non-gated variant of an activation's name."""
    return f"{name}_no_mul" if isinstance(name, str) else _Unknown("activation is not a string")


#: Pure vLLM helpers whose result the interpreter computes (by last dotted name).
_HELPERS: Mapping[str, Callable[[object], object]] = {
    "activation_without_mul": _activation_without_mul,
}


def _is_plain(value: object) -> bool:
    return value is None or isinstance(value, (bool, int, float, str, list, tuple, dict))


def _first_unknown(*values: object) -> _Unknown | None:
    return next((v for v in values if isinstance(v, _Unknown)), None)


def _truth(value: object) -> bool | None:
    """Truthiness, ``None`` when unknown."""
    if isinstance(value, _Unknown):
        return None
    if isinstance(value, (_Obj, _Ref, _Config, _Self)):
        return True
    return bool(value)


# --------------------------------------------------------------------------------------------
# Scopes and qualified names
# --------------------------------------------------------------------------------------------

_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def _module_name(path: str) -> str:
    """Dotted module name of a POSIX path (``a/b/__init__.py`` is ``a.b``)."""
    parts = path[: -len(".py")].split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _absolute(module: str, is_package: bool, level: int, name: str | None) -> str:
    """Resolve a relative import's module against the importing module."""
    base = module.split(".") if module else []
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join([*base, *([name] if name else [])])


def _is_target(qualified: str, relative: bool) -> bool:
    """Whether a qualified name is vLLM's FusedMoE.

    A relative import resolves against the path, whose first components depend on where the run
    was rooted (``vllm/...`` or the package directory itself), so it matches by suffix.
    """
    if qualified in TARGETS:
        return True
    if not relative:
        return False
    return any(
        qualified.endswith("." + t.removeprefix("vllm."))
        or qualified == t.removeprefix("vllm.")
        for t in TARGETS
    )


def _bound_names(node: ast.AST) -> Iterator[str]:
    """Names bound by an assignment target."""
    if isinstance(node, ast.Name):
        yield node.id
    elif isinstance(node, (ast.Tuple, ast.List)):
        for element in node.elts:
            yield from _bound_names(element)
    elif isinstance(node, ast.Starred):
        yield from _bound_names(node.value)


@dataclass
class _Scope:
    node: ast.AST
    parent: _Scope | None
    #: name -> (qualified name, from a relative import) for imports, ``None`` for other bindings.
    bindings: dict[str, tuple[str, bool] | None] = field(default_factory=dict)
    #: Names bound by a ``class``/``def`` or a parameter: never an imported vLLM class here.
    own: set[str] = field(default_factory=set)

    def bind(self, name: str, qualified: tuple[str, bool] | None) -> None:
        if name in self.own:
            return
        # An import wins over ``FusedMoE = None`` in an ``except ImportError`` fallback.
        if qualified is not None:
            self.bindings[name] = qualified
        else:
            self.bindings.setdefault(name, None)

    def bind_own(self, name: str, qualified: tuple[str, bool] | None = None) -> None:
        self.own.add(name)
        self.bindings[name] = qualified


class _Binder(ast.NodeVisitor):
    """Record each scope's bindings and each candidate call's chain of enclosing scopes."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.module = module
        self.is_package = is_package
        self.calls: list[tuple[ast.Call, tuple[_Scope, ...]]] = []
        self.chain: list[_Scope] = []

    @property
    def scope(self) -> _Scope:
        return self.chain[-1]

    def run(self, tree: ast.Module) -> None:
        self.chain.append(_Scope(tree, None))
        self.generic_visit(tree)

    def _enter(self, node: ast.AST, body: list[ast.AST]) -> None:
        self.chain.append(_Scope(node, self.scope))
        for child in body:
            self.visit(child)
        self.chain.pop()

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                self.scope.bind(alias.asname, (alias.name, False))
            else:
                root = alias.name.split(".")[0]
                self.scope.bind(root, (root, False))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        relative = node.level > 0
        base = (
            _absolute(self.module, self.is_package, node.level, node.module)
            if relative
            else node.module or ""
        )
        for alias in node.names:
            if alias.name != "*":
                qualified = f"{base}.{alias.name}" if base else alias.name
                self.scope.bind(alias.asname or alias.name, (qualified, relative))

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.scope.bind_own(node.name)
        for outer in [*node.decorator_list, *node.args.defaults, *node.args.kw_defaults]:
            if outer is not None:
                self.visit(outer)
        self.chain.append(_Scope(node, self.scope))
        arguments = node.args
        for arg in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]:
            self.scope.bind_own(arg.arg)
        for arg in (arguments.vararg, arguments.kwarg):
            if arg is not None:
                self.scope.bind_own(arg.arg)
        for child in node.body:
            self.visit(child)
        self.chain.pop()

    visit_FunctionDef = _visit_function
    visit_AsyncFunctionDef = _visit_function

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        # A class defined in the layer module itself is vLLM's; anywhere else it is the
        # plugin's own, whatever its name.
        local = f"{self.module}.{node.name}" if isinstance(self.scope.node, ast.Module) else None
        self.scope.bind_own(node.name, (local, True) if local and _is_target(local, True) else None)
        for outer in [*node.decorator_list, *node.bases, *(k.value for k in node.keywords)]:
            self.visit(outer)
        self._enter(node, node.body)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._enter(node, [node.body])

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            for name in _bound_names(target):
                self.scope.bind(name, None)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        for name in _bound_names(node.target):
            self.scope.bind(name, None)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        # Every call whose callee is a dotted name: an alias may be spelled anything.
        if _dotted(node.func) is not None:
            self.calls.append((node, tuple(self.chain)))
        self.generic_visit(node)


def _lookup(chain: tuple[_Scope, ...], name: str) -> tuple[str, bool] | None:
    """Qualified name (and whether it came from a relative import) bound to ``name``."""
    innermost = chain[-1]
    for scope in reversed(chain):
        if isinstance(scope.node, ast.ClassDef) and scope is not innermost:
            continue  # a class body's names are not visible from its methods
        if name in scope.bindings:
            return scope.bindings[name]
    return None


def _dotted(node: ast.AST) -> list[str] | None:
    """``a.b.c`` as ``["a", "b", "c"]``; ``None`` for anything but names and attributes."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


def _callee_is_target(func: ast.AST, chain: tuple[_Scope, ...]) -> bool:
    parts = _dotted(func)
    if not parts:
        return False
    bound = _lookup(chain, parts[0])
    if bound is None:
        return False
    qualified, relative = bound
    return _is_target(".".join([qualified, *parts[1:]]), relative)


# --------------------------------------------------------------------------------------------
# The interpreter
# --------------------------------------------------------------------------------------------


def _terminates(body: list[ast.stmt]) -> bool:
    """Whether a block always leaves (its assignments never reach a later statement)."""
    return bool(body) and isinstance(body[-1], (ast.Raise, ast.Return, ast.Continue, ast.Break))


def _merge(a: dict[str, object], b: dict[str, object], line: int) -> dict[str, object]:
    """Join two branches' environments: what they agree on, unknown elsewhere."""
    merged = dict(a)
    for key in a.keys() | b.keys():
        left, right = a.get(key, _MISSING), b.get(key, _MISSING)
        if left is _MISSING or right is _MISSING or type(left) is not type(right) or left != right:
            merged[key] = _Unknown(f"`{key}` differs between the branches of the `if` at line {line}")
    return merged


_MISSING = _Unknown("unbound")


class _Param:
    """A parameter whose value is looked up when first read (defaults, then callers)."""

    def __init__(self, function: ast.FunctionDef | ast.AsyncFunctionDef, name: str) -> None:
        self.function = function
        self.name = name


@dataclass
class _Eval:
    """State of one expression's evaluation: what it had to assume on the way."""

    env: dict[str, object]
    cls: ast.ClassDef | None
    depth: int
    soft: list[str] = field(default_factory=list)


class _Module:
    """One parsed file: its scopes, its classes, and the interpreter over its functions."""

    def __init__(self, path: str, data: bytes) -> None:
        self.path = path
        self.text = _decode(data)
        self.tree = ast.parse(self.text, filename=path)
        self.lines = self.text.splitlines()
        self.module = _module_name(path)
        binder = _Binder(self.module, path.endswith("__init__.py"))
        binder.run(self.tree)
        self.calls = binder.calls
        self.parents: dict[int, ast.AST] = {}
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                self.parents[id(child)] = node
        self.tiny: TinyConfig = config_for(path, None)
        self._module_env: dict[str, object] | None = None
        self._running: set[int] = set()
        self._method_envs: dict[tuple[int, int], dict[str, object]] = {}
        self._running_functions: set[int] = set()
        self.functions = {
            node.name: node for node in self.tree.body if isinstance(node, ast.FunctionDef)
        }
        self._parameters: dict[tuple[int, str, int], tuple[object, list[str]] | None] = {}

    # -- sites -----------------------------------------------------------------------------

    def fused_moe_calls(self) -> Iterator[tuple[ast.Call, tuple[_Scope, ...]]]:
        for call, chain in self.calls:
            if _callee_is_target(call.func, chain):
                yield call, chain

    def site(self, call: ast.Call, chain: tuple[_Scope, ...]) -> Site:
        cls = next((s.node for s in reversed(chain) if isinstance(s.node, ast.ClassDef)), None)
        class_name = cls.name if isinstance(cls, ast.ClassDef) else None
        tiny = config_for(self.path, class_name)
        if tiny is not self.tiny:
            self.tiny, self._parameters, self._method_envs = tiny, {}, {}
        try:
            env = self.env_at(call, depth=0)
            state = _Eval(env, cls if isinstance(cls, ast.ClassDef) else None, depth=0)
            config, assumed, notes = self._resolve_arguments(call, state)
        except Exception as error:  # noqa: BLE001  # a bug here must not lose the site
            config = {name: self.tiny.fallback(name) for name in REQUIRED}
            assumed, notes = list(REQUIRED), [f"arguments not analysed: {error!r}"]
        line, column = self._position(call.lineno, call.col_offset)
        end_line, end_column = self._position(call.end_lineno or call.lineno, call.end_col_offset)
        return Site(
            path=self.path,
            line=line,
            column=column,
            end_line=end_line,
            end_column=end_column,
            class_name=class_name,
            model=self.tiny.key,
            callee=ast.unparse(call.func),
            keywords=tuple(self._keyword(k) for k in call.keywords if k.arg is not None),
            positional=sum(1 for a in call.args if not isinstance(a, ast.Starred)),
            config=tuple(config.items()),
            assumed=tuple(assumed),
            notes=tuple(notes),
        )

    def _keyword(self, node: ast.keyword) -> Keyword:
        line, column = self._position(node.lineno, node.col_offset)
        end_line, end_column = self._position(node.end_lineno or node.lineno, node.end_col_offset)
        return Keyword(str(node.arg), line, column, end_line, end_column)

    def _position(self, line: int, byte_offset: int | None) -> tuple[int, int]:
        """1-based line and character column from :mod:`ast`'s UTF-8 byte offset."""
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        prefix = text.encode("utf-8")[: byte_offset or 0]
        return line, len(prefix.decode("utf-8", errors="ignore")) + 1

    def _resolve_arguments(
        self, call: ast.Call, state: _Eval
    ) -> tuple[dict[str, object], list[str], list[str]]:
        written: dict[str, ast.expr] = dict(zip(POSITIONAL_ORDER, call.args))
        notes: list[str] = []
        for arg in call.args:
            if isinstance(arg, ast.Starred):
                notes.append(f"`*{ast.unparse(arg.value)}` is not analysed")
        for keyword in call.keywords:
            if keyword.arg is None:
                notes.append(f"`**{ast.unparse(keyword.value)}` is not analysed")
            else:
                written[keyword.arg] = keyword.value
        config: dict[str, object] = {}
        assumed: list[str] = []
        for name, kind in SEMANTIC.items():
            if name not in written:
                if name in REQUIRED:
                    config[name] = self.tiny.fallback(name)
                    assumed.append(name)
                    notes.append(f"{name}: not passed at the call; assumed {config[name]!r}")
                continue
            state.soft = []
            value = _coerce(self.eval(written[name], state), kind)
            if isinstance(value, _Unknown):
                config[name] = self.tiny.fallback(name)
                assumed.append(name)
                notes.append(f"{name}: {value.reason}; assumed {config[name]!r}")
            else:
                config[name] = value
                if state.soft:
                    assumed.append(name)
                    notes.append(f"{name}: {'; '.join(dict.fromkeys(state.soft))}")
        quant = written.get("quant_config")
        if quant is not None:
            state.soft = []
            if isinstance(self.eval(quant, state), (_Obj, _Ref)) and not state.soft:
                notes.append("quant_config is set at this site: quantization is not smoke-tested")
        _reconcile(config, assumed, notes)
        return config, assumed, notes

    # -- environments ----------------------------------------------------------------------

    def module_env(self) -> dict[str, object]:
        if self._module_env is None:
            env: dict[str, object] = {}
            for node in self.tree.body:
                if isinstance(node, (*_FUNCTIONS, ast.ClassDef)):
                    env[node.name] = _Ref(node.name)
            self._module_env = env
            self._exec(self.tree.body, env, None, _Eval(env, None, _CALLER_DEPTH))
        return self._module_env

    def _enclosing(self, node: ast.AST) -> list[ast.AST]:
        """Ancestors of ``node``, innermost first."""
        found = []
        while id(node) in self.parents:
            node = self.parents[id(node)]
            found.append(node)
        return found

    def env_at(self, node: ast.AST, depth: int) -> dict[str, object]:
        """The environment just before the statement that contains ``node`` runs."""
        ancestors = self._enclosing(node)
        function = next((a for a in ancestors if isinstance(a, _FUNCTIONS)), None)
        env = dict(self.module_env())
        if function is None:
            return env
        cls = self.parents.get(id(function))
        state = _Eval(env, cls if isinstance(cls, ast.ClassDef) else None, depth)
        self._bind_parameters(function, env)
        self._exec(function.body, env, {id(a) for a in ancestors} | {id(node)}, state)
        return env

    def _bind_parameters(self, function: ast.FunctionDef | ast.AsyncFunctionDef, env: dict) -> None:
        arguments = function.args
        positional = [*arguments.posonlyargs, *arguments.args]
        is_method = isinstance(self.parents.get(id(function)), ast.ClassDef)
        for index, arg in enumerate([*positional, *arguments.kwonlyargs]):
            if index == 0 and is_method and arg.arg in ("self", "cls"):
                env[arg.arg] = _SELF
            elif arg.arg in _CONFIG_NAMES:
                env[arg.arg] = _Config(self.tiny)
            else:
                env[arg.arg] = _Param(function, arg.arg)
        for arg in (arguments.vararg, arguments.kwarg):
            if arg is not None:
                env[arg.arg] = _Unknown(f"`{arg.arg}` collects the caller's extra arguments")

    def _parameter(self, param: _Param, state: _Eval) -> object:
        """A parameter's value: what the calls in this file pass, else its default."""
        function = param.function
        default = _default_of(function, param.name)
        if state.depth < _CALLER_DEPTH:
            cache_key = (id(function), param.name, state.depth)
            if cache_key not in self._parameters:
                self._parameters[cache_key] = self._passed_by_callers(
                    function, param.name, state.depth + 1
                )
            passed = self._parameters[cache_key]
            if passed is not None:
                value, soft = passed
                state.soft.extend(soft)
                return value
        if default is None:
            return _Unknown(f"`{param.name}` is a parameter of `{function.name}`")
        value = self.eval(default, _Eval(self.module_env(), None, _CALLER_DEPTH))
        state.soft.append(f"`{param.name}` taken from its default in `{function.name}`")
        return value

    def _passed_by_callers(
        self, function: ast.FunctionDef | ast.AsyncFunctionDef, name: str, depth: int
    ) -> tuple[object, list[str]] | None:
        """What the first call of ``function`` (or its class) in this file passes for ``name``."""
        owner = self.parents.get(id(function))
        if isinstance(owner, ast.ClassDef) and function.name == "__init__":
            callee, skip = owner.name, 1
        elif isinstance(owner, ast.Module):
            callee, skip = function.name, 0
        else:
            return None
        parameters = [a.arg for a in [*function.args.posonlyargs, *function.args.args]][skip:]
        for call in ast.walk(self.tree):
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)):
                continue
            if call.func.id != callee:
                continue
            expression = _argument(call, parameters, name)
            if expression is None:
                default = _default_of(function, name)
                if default is None:
                    continue
                expression = default
            env = self.env_at(call, depth)
            caller = self._enclosing(call)
            cls = next((a for a in caller if isinstance(a, ast.ClassDef)), None)
            state = _Eval(env, cls, depth)
            value = self.eval(expression, state)
            return value, state.soft
        return None

    # -- statements ------------------------------------------------------------------------

    def _exec(
        self, body: list[ast.stmt], env: dict, stop: set[int] | None, state: _Eval
    ) -> bool:
        """Run ``body`` up to the statement that holds the site, or a ``return``; True if so."""
        for statement in body:
            if stop is not None and id(statement) in stop:
                return self._enter(statement, env, stop, state)
            if self._statement(statement, env, state):
                return True
        return False

    def _enter(self, statement: ast.stmt, env: dict, stop: set[int], state: _Eval) -> bool:
        """Descend into the block of a compound statement that holds the site."""
        blocks: list[list[ast.stmt]] = []
        if isinstance(statement, (ast.If, ast.For, ast.While, ast.Try, ast.With, ast.AsyncWith)):
            blocks = [statement.body, getattr(statement, "orelse", [])]
            if isinstance(statement, ast.Try):
                blocks += [h.body for h in statement.handlers] + [statement.finalbody]
        for index, block in enumerate(blocks):
            if any(id(s) in stop for s in block):
                if isinstance(statement, (ast.For, ast.While)):
                    _forget(statement, env)
                if isinstance(statement, ast.If):
                    self._contradict(statement.test, index == 0, env, state)
                return self._exec(block, env, stop, state)
        return True

    def _contradict(self, test: ast.expr, holds: bool, env: dict, state: _Eval) -> None:
        """The site runs only when ``test`` is ``holds``: forget guesses that say otherwise.

        MiniMax-Text-01 builds its FusedMoE under ``if expert_num == 1: ... else:``, where
        ``expert_num`` defaults to 1; the default is then known to be wrong for this site.
        """
        value, soft = self._tracked(test, state)
        if _truth(value) is None or _truth(value) == holds or not soft:
            return
        for node in ast.walk(test):
            key = self._key(node) if isinstance(node, (ast.Name, ast.Attribute)) else None
            if key is not None and isinstance(env.get(key), (_Param, _Soft)):
                env[key] = _Unknown(f"`{key}` cannot be its default where this call runs")

    def _tracked(self, node: ast.AST, state: _Eval) -> tuple[object, tuple[str, ...]]:
        """Evaluate ``node`` and return, apart, the assumptions it made."""
        outer, state.soft = state.soft, []
        try:
            value = self.eval(node, state)
        finally:
            inner, state.soft = state.soft, outer
        return value, tuple(dict.fromkeys(inner))

    def _value(self, node: ast.AST, state: _Eval) -> object:
        """A value to store: wrapped in :class:`_Soft` when it rests on an assumption."""
        value, soft = self._tracked(node, state)
        return _Soft(value, soft) if soft and not isinstance(value, _Unknown) else value

    def _statement(self, statement: ast.stmt, env: dict, state: _Eval) -> bool:
        """Run one statement; True when it returns from the function."""
        if isinstance(statement, ast.Assign):
            value = self._value(statement.value, state)
            for target in statement.targets:
                self._assign(target, value, env)
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            self._assign(statement.target, self._value(statement.value, state), env)
        elif isinstance(statement, ast.AugAssign):
            operation = ast.BinOp(statement.target, statement.op, statement.value)
            self._assign(statement.target, self._value(operation, state), env)
        elif isinstance(statement, ast.Return):
            value = None if statement.value is None else self.eval(statement.value, state)
            env[_RETURN] = value
            return True
        elif isinstance(statement, ast.If):
            return self._if(statement, env, state)
        elif isinstance(statement, (ast.For, ast.While)):
            _forget(statement, env)
        elif isinstance(statement, (ast.With, ast.AsyncWith)):
            return self._exec(statement.body, env, None, state)
        elif isinstance(statement, ast.Try):
            return self._exec(statement.body, env, None, state) or self._exec(
                statement.orelse, env, None, state
            )
        else:
            self._bind_definition(statement, env)
        return False

    def _bind_definition(self, statement: ast.stmt, env: dict) -> None:
        if isinstance(statement, (*_FUNCTIONS, ast.ClassDef)):
            env[statement.name] = _Ref(statement.name)
        elif isinstance(statement, ast.Import):
            for alias in statement.names:
                bound = alias.asname or alias.name.split(".")[0]
                env[bound] = _Ref(alias.name if alias.asname else bound)
        elif isinstance(statement, ast.ImportFrom):
            for alias in statement.names:
                env[alias.asname or alias.name] = _Ref(alias.name)

    def _if(self, statement: ast.If, env: dict, state: _Eval) -> bool:
        value, soft = self._tracked(statement.test, state)
        taken = _truth(value)
        if taken is not None:
            before = dict(env)
            returned = self._exec(statement.body if taken else statement.orelse, env, None, state)
            for key, current in env.items():
                if soft and before.get(key, _MISSING) is not current:
                    env[key] = _soften(current, soft)
            return returned
        if any(isinstance(n, ast.Return) for n in ast.walk(statement)):
            env[_RETURN] = _Unknown(f"returns under `{ast.unparse(statement.test)}`")
            return True
        branches = []
        for block in (statement.body, statement.orelse):
            if not _terminates(block):
                branch = dict(env)
                self._exec(block, branch, None, _Eval(branch, state.cls, state.depth, state.soft))
                branches.append(branch)
        if branches:
            merged = branches[0] if len(branches) == 1 else _merge(*branches, statement.lineno)
            env.clear()
            env.update(merged)
        return False

    def _assign(self, target: ast.AST, value: object, env: dict) -> None:
        if isinstance(target, (ast.Tuple, ast.List)):
            inner = value.value if isinstance(value, _Soft) else value
            values = inner if isinstance(inner, (tuple, list)) else None
            for index, element in enumerate(target.elts):
                if values is not None and len(values) == len(target.elts):
                    self._assign(element, _soften(values[index], _soft_of(value)), env)
                else:
                    self._assign(element, _Unknown("unpacked from a value not known"), env)
            return
        key = self._key(target)
        if key is None:
            return
        for stale in [k for k in env if k.startswith(key + ".")]:
            del env[stale]
        env[key] = value

    def _key(self, node: ast.AST) -> str | None:
        """Environment key of a name or a ``self.a.b`` chain."""
        parts = _dotted(node)
        if parts is None or (len(parts) > 1 and parts[0] != "self"):
            return None
        return ".".join(parts)

    # -- expressions -----------------------------------------------------------------------

    def eval(self, node: ast.AST, state: _Eval) -> object:
        try:
            return self._eval(node, state)
        except RecursionError:
            return _Unknown(f"`{ast.unparse(node)}` is too deeply nested")

    def _eval(self, node: ast.AST, state: _Eval) -> object:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return self._name(node.id, state)
        if isinstance(node, ast.Attribute):
            return self._attribute(node, state)
        if isinstance(node, ast.IfExp):
            taken = _truth(self._eval(node.test, state))
            if taken is None:
                return _Unknown(f"the condition `{ast.unparse(node.test)}` does not resolve")
            return self._eval(node.body if taken else node.orelse, state)
        if isinstance(node, ast.BoolOp):
            return self._boolean(node, state)
        if isinstance(node, ast.UnaryOp):
            return _unary(node.op, self._eval(node.operand, state))
        if isinstance(node, ast.BinOp):
            return _binary(node.op, self._eval(node.left, state), self._eval(node.right, state))
        if isinstance(node, ast.Compare):
            return self._compare(node, state)
        if isinstance(node, ast.Call):
            return self._call(node, state)
        if isinstance(node, ast.Subscript):
            return _subscript(self._eval(node.value, state), self._eval(node.slice, state))
        if isinstance(node, (ast.Tuple, ast.List)):
            items = [self._eval(e, state) for e in node.elts]
            unknown = _first_unknown(*items)
            return unknown or (tuple(items) if isinstance(node, ast.Tuple) else items)
        if isinstance(node, ast.Lambda):
            return _Ref("<lambda>")
        return _Unknown(f"`{ast.unparse(node)}` is not evaluated")

    def _read(self, value: object, state: _Eval) -> object:
        """An environment value for use: parameters looked up, assumptions recorded."""
        if isinstance(value, _Param):
            return self._parameter(value, state)
        if isinstance(value, _Soft):
            state.soft.extend(value.soft)
            return value.value
        return value

    def _name(self, name: str, state: _Eval) -> object:
        if name in state.env:
            return self._read(state.env[name], state)
        if name in _TYPES or name in _PURE_BUILTINS or name in ("getattr", "hasattr", "isinstance"):
            return _Ref(name)
        return _Unknown(f"`{name}` is not defined before the call")

    def _attribute(self, node: ast.Attribute, state: _Eval) -> object:
        key = self._key(node)
        if key is not None and key in state.env:
            return self._read(state.env[key], state)
        base = self._eval(node.value, state)
        if isinstance(base, _Self):
            return self._self_attribute(node.attr, state)
        return self._member(base, node.attr, ast.unparse(node))

    def _member(self, base: object, name: str, text: str) -> object:
        if name in ("hf_config", "hf_text_config"):
            return _Config(self.tiny)  # vllm_config.model_config.hf_config and the like
        if isinstance(base, _Unknown):
            return base
        if isinstance(base, _Config):
            if name == "text_config":
                return base
            if name in base.tiny.values:
                return base.tiny.values[name]
            return _Unknown(f"`{text}` is not in the tiny config `{base.tiny.key}`")
        if isinstance(base, _Ref):
            return _Ref(f"{base.name}.{name}")
        if isinstance(base, _Obj) and name == "data":
            return base
        return _Unknown(f"`{text}` is not known")

    def _self_attribute(self, name: str, state: _Eval) -> object:
        """``self.name`` not assigned earlier in this function: look through the class."""
        cls = state.cls
        if name == "config" and (cls is None or not _assigns(cls, "self.config")):
            return _Config(self.tiny)
        if cls is None:
            return _Unknown(f"`self.{name}` outside a class")
        for statement in cls.body:
            if isinstance(statement, (*_FUNCTIONS, ast.ClassDef)) and statement.name == name:
                return _Ref(f"{cls.name}.{name}")
            if isinstance(statement, (ast.Assign, ast.AnnAssign)) and statement.value is not None:
                targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
                if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                    return self.eval(statement.value, _Eval(self.module_env(), cls, state.depth))
        first = next(_assignments(cls, f"self.{name}"), None)
        if first is None:
            return _Unknown(f"`self.{name}` is not assigned in `{cls.name}`")
        return self._read(self._after_method(first, f"self.{name}", state.depth), state)

    def _after_method(self, assignment: ast.stmt, key: str, depth: int) -> object:
        """``key`` at the end of the method that assigns it (both branches of an ``if`` seen)."""
        method = next((a for a in self._enclosing(assignment) if isinstance(a, _FUNCTIONS)), None)
        if method is None or id(method) in self._running:
            return _Unknown(f"`{key}` is read before it is assigned")
        memo = (id(method), depth)
        if memo not in self._method_envs:
            self._running.add(id(method))
            try:
                env = dict(self.module_env())
                cls = self.parents.get(id(method))
                self._bind_parameters(method, env)
                state = _Eval(env, cls if isinstance(cls, ast.ClassDef) else None, depth)
                self._exec(method.body, env, None, state)
            finally:
                self._running.discard(id(method))
            self._method_envs[memo] = env
        return self._method_envs[memo].get(key, _Unknown(f"`{key}` is not known"))

    def _boolean(self, node: ast.BoolOp, state: _Eval) -> object:
        is_and = isinstance(node.op, ast.And)
        value: object = None
        for operand in node.values:
            value = self._eval(operand, state)
            truth = _truth(value)
            if truth is None:
                return value if isinstance(value, _Unknown) else _Unknown("truth not known")
            if truth != is_and:
                return value
        return value

    def _compare(self, node: ast.Compare, state: _Eval) -> object:
        left = self._eval(node.left, state)
        for op, comparator in zip(node.ops, node.comparators):
            right = self._eval(comparator, state)
            result = _compare(op, left, right)
            if result is not True:
                return result
            left = right
        return True

    def _call(self, node: ast.Call, state: _Eval) -> object:
        func = self._eval(node.func, state)
        parts = _dotted(node.func) or []
        last = parts[-1] if parts else ""
        if isinstance(func, _Ref) and func.name in self.functions and len(parts) == 1:
            return self._inline(self.functions[func.name], node, state)
        if isinstance(func, _Ref) and func.name in ("getattr", "hasattr", "isinstance"):
            return self._introspect(func.name, node, state)
        if isinstance(func, _Ref) and (func.name in _PURE_BUILTINS or func.name in _TYPES):
            return self._builtin(func.name, node, state)
        if last in _FACTS and not node.args:
            return _FACTS[last]
        if last in _HELPERS and len(node.args) == 1:
            return _HELPERS[last](self._eval(node.args[0], state))
        if parts[:1] == ["rocm_aiter_ops"]:
            return False  # ROCm AITER is never the path a one-device smoke test runs
        if last in ("get_text_config", "get_hf_config") and isinstance(
            self._eval(node.func.value, state) if isinstance(node.func, ast.Attribute) else None,
            _Config,
        ):
            return _Config(self.tiny)
        return _Obj(ast.unparse(node.func) + "(...)")

    def _inline(self, function: ast.FunctionDef, node: ast.Call, state: _Eval) -> object:
        """The value a module-level function of this file returns for this call.

        Grok-1 reads its sizes through helpers such as ``_get_num_experts(config)``.
        """
        if id(function) in self._running_functions or len(self._running_functions) > 2:
            return _Unknown(f"`{function.name}` is too deep to follow")
        parameters = [a.arg for a in [*function.args.posonlyargs, *function.args.args]]
        env = dict(self.module_env())
        for name in parameters + [a.arg for a in function.args.kwonlyargs]:
            expression = _argument(node, parameters, name) or _default_of(function, name)
            env[name] = (
                _Unknown(f"`{name}` of `{function.name}` is not passed")
                if expression is None
                else self._value(expression, state)
            )
        self._running_functions.add(id(function))
        try:
            returned = self._exec(function.body, env, None, _Eval(env, None, state.depth, state.soft))
        finally:
            self._running_functions.discard(id(function))
        return self._read(env.get(_RETURN), state) if returned else None

    def _introspect(self, name: str, node: ast.Call, state: _Eval) -> object:
        args = [self._eval(a, state) for a in node.args]
        if name == "isinstance" and len(args) == 2:
            types = args[1] if isinstance(args[1], tuple) else (args[1],)
            if any(not (isinstance(t, _Ref) and t.name in _TYPES) for t in types):
                return _Unknown(f"`{ast.unparse(node)}` checks a type the interpreter does not know")
            unknown = _first_unknown(args[0])
            if unknown or not _is_plain(args[0]):
                return unknown or _Unknown(f"`{ast.unparse(node)}` is not known")
            return isinstance(args[0], tuple(_TYPES[t.name] for t in types))  # type: ignore[union-attr]  # checked above
        if len(args) < 2 or not isinstance(args[1], str):
            return _Unknown(f"`{ast.unparse(node)}` is not known")
        obj, attribute = args[0], args[1]
        if isinstance(obj, _Config):
            present = attribute in obj.tiny.values
            if name == "hasattr":
                return present
            if present:
                return obj.tiny.values[attribute]
            return args[2] if len(args) > 2 else _Unknown(f"config has no `{attribute}`")
        if isinstance(obj, _Self) and name == "getattr":
            key = f"self.{attribute}"
            if key in state.env:
                return self._read(state.env[key], state)
            value = self._self_attribute(attribute, state)
            if isinstance(value, _Unknown) and len(args) > 2:
                return args[2]
            return value
        return _Unknown(f"`{ast.unparse(node)}` is not known")

    def _builtin(self, name: str, node: ast.Call, state: _Eval) -> object:
        args = [self._eval(a, state) for a in node.args]
        unknown = _first_unknown(*args)
        if unknown or not all(_is_plain(a) for a in args) or node.keywords:
            return unknown or _Unknown(f"`{ast.unparse(node)}` is not known")
        function = _TYPES.get(name) or _PURE_BUILTINS[name]
        try:
            return function(*args)
        except (TypeError, ValueError):
            return _Unknown(f"`{ast.unparse(node)}` fails on the tiny config")


def _decode(data: bytes) -> str:
    """Source text, honouring a coding cookie and a BOM as Python does."""
    encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    return data.decode(encoding).removeprefix("\ufeff")


def _default_of(function: ast.FunctionDef | ast.AsyncFunctionDef, name: str) -> ast.expr | None:
    arguments = function.args
    positional = [*arguments.posonlyargs, *arguments.args]
    offset = len(positional) - len(arguments.defaults)
    for index, arg in enumerate(positional):
        if arg.arg == name and index >= offset:
            return arguments.defaults[index - offset]
    for arg, default in zip(arguments.kwonlyargs, arguments.kw_defaults):
        if arg.arg == name:
            return default
    return None


def _argument(call: ast.Call, parameters: list[str], name: str) -> ast.expr | None:
    """The expression a call passes for parameter ``name``, by keyword or position."""
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    if name in parameters:
        index = parameters.index(name)
        positional = [a for a in call.args if not isinstance(a, ast.Starred)]
        if index < len(positional) and len(positional) == len(call.args):
            return positional[index]
    return None


def _assigns(cls: ast.ClassDef, key: str) -> bool:
    return next(_assignments(cls, key), None) is not None


def _assignments(cls: ast.ClassDef, key: str) -> Iterator[ast.stmt]:
    """Statements in the class's methods that assign ``key`` (``self.a.b``)."""
    for node in ast.walk(cls):
        targets: list[ast.AST] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        if any(".".join(_dotted(t) or []) == key for t in targets):
            yield node


def _forget(loop: ast.For | ast.While, env: dict) -> None:
    """A loop's assignments happen some unknown number of times."""
    for node in ast.walk(loop):
        targets: list[ast.AST] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        elif isinstance(node, ast.For):
            targets = [node.target]
        for target in targets:
            for name in _bound_names(target):
                env[name] = _Unknown(f"`{name}` is assigned in a loop")
            parts = _dotted(target)
            if parts and parts[0] == "self" and len(parts) > 1:
                env[".".join(parts)] = _Unknown(f"`{'.'.join(parts)}` is assigned in a loop")


def _unary(op: ast.unaryop, value: object) -> object:
    if isinstance(value, _Unknown):
        return value
    if isinstance(op, ast.Not):
        return not _truth(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _Unknown("not a number")
    if isinstance(op, ast.USub):
        return -value
    if isinstance(op, ast.UAdd):
        return +value
    return ~value if isinstance(value, int) else _Unknown("not an integer")


def _binary(op: ast.operator, left: object, right: object) -> object:
    unknown = _first_unknown(left, right)
    function = _BINARY.get(type(op))
    if unknown or function is None or not (_is_plain(left) and _is_plain(right)):
        return unknown or _Unknown("arithmetic on values not known")
    try:
        return function(left, right)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return _Unknown("arithmetic fails on the tiny config")


def _compare(op: ast.cmpop, left: object, right: object) -> object:
    if isinstance(op, (ast.Is, ast.IsNot)):
        if left is not None and right is not None:
            return _first_unknown(left, right) or _Unknown("identity of objects not known")
        other = right if left is None else left
        if isinstance(other, _Unknown):
            return other
        return (other is None) == isinstance(op, ast.Is)
    unknown = _first_unknown(left, right)
    if unknown or not (_is_plain(left) and _is_plain(right)):
        if isinstance(op, (ast.Eq, ast.NotEq)) and (left is None or right is None) and not unknown:
            return isinstance(op, ast.NotEq)  # an object is never equal to None
        return unknown or _Unknown("comparison of objects not known")
    try:
        return _COMPARE[type(op)](left, right)
    except TypeError:
        return _Unknown("comparison fails on the tiny config")


def _subscript(value: object, index: object) -> object:
    unknown = _first_unknown(value, index)
    if unknown:
        return unknown
    if isinstance(value, _Obj):
        return value  # an element of a parameter list or tensor is still an object
    if isinstance(value, (list, tuple, dict, str)) and _is_plain(index):
        try:
            return value[index]  # type: ignore[index]  # failures are caught below
        except (IndexError, KeyError, TypeError):
            return _Unknown("index out of the tiny config's range")
    return _Unknown("subscript of a value not known")


def _coerce(value: object, kind: str) -> object:
    """A resolved value as the layer takes it, or unknown when it has the wrong type."""
    if isinstance(value, _Unknown):
        return value
    if kind == "module":
        return None if value is None else PRESENT
    if kind == "function":
        if value is None:
            return None
        if isinstance(value, (_Ref, _Obj)):
            return value.name if isinstance(value, _Ref) else value.text
        return _Unknown("not a function")
    if kind == "int?" and value is None:
        return None
    if kind in ("int", "int?") and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind == "bool" and isinstance(value, (bool, int)):
        return bool(value)
    if kind == "str" and isinstance(value, str):
        return value
    shown = value.text if isinstance(value, _Obj) else repr(value)
    return _Unknown(f"resolves to {shown}, not {kind.rstrip('?')}")


def _reconcile(config: dict[str, object], assumed: list[str], notes: list[str]) -> None:
    """Keep assumed values from contradicting resolved ones (top-k within the experts)."""
    experts, top_k = config.get("num_experts"), config.get("top_k")
    if isinstance(experts, int) and isinstance(top_k, int) and top_k > experts:
        if "top_k" in assumed:
            config["top_k"] = experts
            notes.append(f"top_k: capped at num_experts={experts}")
        elif "num_experts" in assumed:
            config["num_experts"] = top_k
            notes.append(f"num_experts: raised to top_k={top_k}")
