"""Check every FusedMoE call site against the target tree's own ``FusedMoE.__init__``.

The removed ``SharedFusedMoE`` accepted arguments that ``FusedMoE`` does not (older vLLM
releases took ``use_overlapped=``, for example). A migrated call that still passes one raises
``TypeError`` the moment the model is built, so the smoke test reports it before anything runs:
one ``smoke-unknown-kwarg`` error finding per offending argument, at that argument.

The signature is read statically with :mod:`ast`, never by importing vLLM (which needs a GPU
stack) or torch:

1. from ``vllm/model_executor/layers/fused_moe/layer.py`` in the run's sources (the migrated
   bytes, so a dry run checks the proposed tree), or on disk under the root;
2. otherwise from the bundled layer, ``moe_migrate/smoke/layer.py``, whose constructor copies
   vLLM 0.19.1's.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from moe_migrate.codemod.outcomes import Finding, Severity
from moe_migrate.smoke.sites import Site

RULE = "smoke-unknown-kwarg"

#: Where vLLM defines FusedMoE, relative to a repository root or to the ``vllm`` package itself.
LAYER_PATHS = (
    "vllm/model_executor/layers/fused_moe/layer.py",
    "model_executor/layers/fused_moe/layer.py",
)

_BUNDLED = Path(__file__).with_name("layer.py")


@dataclass(frozen=True)
class Signature:
    """The parameters of one ``FusedMoE.__init__`` (``self`` left out)."""

    #: Where it was read: a path relative to the root, or ``bundled:<file>``.
    source: str
    #: Parameters that may be passed by position, in order (the first ``positional_only`` of
    #: them by position only).
    positional: tuple[str, ...]
    keyword_only: tuple[str, ...] = ()
    positional_only: int = 0
    var_positional: bool = False
    var_keyword: bool = False

    def accepts(self, keyword: str) -> bool:
        """Whether ``keyword=`` is a valid argument."""
        return (
            self.var_keyword
            or keyword in self.positional[self.positional_only :]
            or keyword in self.keyword_only
        )


def read_signature(sources: Mapping[str, bytes], root: Path) -> Signature:
    """The target tree's ``FusedMoE.__init__`` signature, else the bundled layer's.

    Sources win over the disk; among several copies of vLLM in one tree, the one at the
    shortest path wins. Never raises for unreadable or unparsable files: it falls back.
    """
    for path, data in _layer_candidates(sources, root):
        found = signature_from_source(data, path)
        if found is not None:
            return found
    return bundled_signature()


def bundled_signature() -> Signature:
    """The bundled layer's signature (vLLM 0.19.1's), read from its source file."""
    found = signature_from_source(_BUNDLED.read_bytes(), f"bundled:{_BUNDLED.name}")
    if found is None:  # pragma: no cover  # the package ships layer.py with FusedMoE
        raise RuntimeError(f"{_BUNDLED} defines no FusedMoE.__init__")
    return found


def signature_from_source(data: bytes, source: str) -> Signature | None:
    """``FusedMoE.__init__``'s signature in one module's source; ``None`` if it has none."""
    try:
        tree = ast.parse(data)
    except (SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "FusedMoE":
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    return _signature(item.args, source)
    return None


def check_sites(sites: Iterable[Site], signature: Signature) -> tuple[Finding, ...]:
    """One ``smoke-unknown-kwarg`` error per argument that ``signature`` does not accept."""
    findings: list[Finding] = []
    for site in sites:
        findings.extend(_check_site(site, signature))
    return tuple(sorted(findings))


def _check_site(site: Site, signature: Signature) -> Iterable[Finding]:
    where = _describe(signature)
    if site.positional > len(signature.positional) and not signature.var_positional:
        yield Finding(
            path=site.path,
            line=site.line,
            column=site.column,
            end_line=site.end_line,
            end_column=site.end_column,
            rule=RULE,
            severity=Severity.ERROR,
            message=(
                f"FusedMoE takes at most {len(signature.positional)} positional arguments "
                f"({where}) but this call passes {site.positional}."
            ),
            fix="Pass the extra arguments by keyword, with the names FusedMoE.__init__ uses.",
        )
    by_position = set(signature.positional[: site.positional])
    for keyword in site.keywords:
        if keyword.name in by_position:
            message = (
                f"`{keyword.name}` is already passed by position, so FusedMoE gets it twice "
                f"({where})."
            )
            fix = f"Remove either the positional argument or `{keyword.name}=`."
        elif not signature.accepts(keyword.name):
            message = (
                f"FusedMoE.__init__ has no parameter `{keyword.name}` ({where}); this call "
                "raises TypeError when the model is built."
            )
            fix = (
                f"Remove `{keyword.name}=...`: it configured the removed SharedFusedMoE or "
                "another class. If the behaviour is still needed, find the FusedMoE parameter "
                "that replaced it in this vLLM version."
            )
        else:
            continue
        yield Finding(
            path=site.path,
            line=keyword.line,
            column=keyword.column,
            end_line=keyword.end_line,
            end_column=keyword.end_column,
            rule=RULE,
            severity=Severity.ERROR,
            message=message,
            fix=fix,
        )


def _describe(signature: Signature) -> str:
    if signature.source.startswith("bundled:"):
        return "vLLM 0.19.1's signature, as bundled; the tree has no vLLM layer.py"
    return f"as defined in {signature.source}"


def _signature(arguments: ast.arguments, source: str) -> Signature:
    positional = [a.arg for a in [*arguments.posonlyargs, *arguments.args]]
    return Signature(
        source=source,
        positional=tuple(positional[1:]),  # self
        keyword_only=tuple(a.arg for a in arguments.kwonlyargs),
        positional_only=max(len(arguments.posonlyargs) - 1, 0),
        var_positional=arguments.vararg is not None,
        var_keyword=arguments.kwarg is not None,
    )


def _layer_candidates(sources: Mapping[str, bytes], root: Path) -> Iterable[tuple[str, bytes]]:
    """(path, bytes) of vLLM's layer.py: in the sources by shortest path, then on disk."""
    suffix = "/" + LAYER_PATHS[1]
    in_sources = sorted(
        (p for p in sources if p in LAYER_PATHS or p.endswith(suffix)), key=lambda p: (len(p), p)
    )
    for path in in_sources:
        yield path, sources[path]
    for path in LAYER_PATHS:
        if path in sources:
            continue
        try:
            yield path, (root / path).read_bytes()
        except OSError:
            continue
