"""The smoke test: build every FusedMoE call site's layer, run it, compare with the reference.

:func:`run_smoke` takes the migrated tree as it is held in memory (path -> bytes, never written
to disk first), finds the call sites (:mod:`.sites`), checks their keywords against the tree's
own ``FusedMoE.__init__`` (:mod:`.signature`), then, per site:

1. builds the bundled :class:`~moe_migrate.smoke.layer.FusedMoE` with the site's resolved
   arguments; module-valued ones that resolve to ``present`` become small stand-ins (a gated
   SiLU MLP for ``shared_experts``, a bias-free linear router for ``gate``, a square linear
   map for ``routed_input_transform``, a random ``[E]`` tensor for ``e_score_correction_bias``);
2. fills every weight from a fixed seed, draws ``tokens`` hidden states and router logits;
3. runs one forward through the fused Triton kernels and one through the plain-torch loop,
   with the same routing, and compares them.

On CUDA the kernels compile; otherwise they run under Triton's interpreter, which is switched
on (``TRITON_INTERPRET=1``) before triton is first imported. torch and triton are imported here
only, inside the functions, so importing this module costs nothing. Each case reports its device
and backend; a case that could not be built or run is ``error``, never ``passed``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moe_migrate.codemod.outcomes import Finding
from moe_migrate.smoke.signature import check_sites, read_signature
from moe_migrate.smoke.sites import PRESENT, Site, find_sites

#: Tokens per forward pass. Small enough that the interpreter runs the vLLM tree's ~36 sites in
#: well under a minute, large enough that most experts receive a token and some receive none.
DEFAULT_TOKENS = 16

STATUSES = ("passed", "failed", "error")

#: Allowed max |kernels - reference| = atol + rtol * max |reference|, per dtype.
#: float32: the kernels multiply in full IEEE precision (no TF32) and differ from the loop only in
#: summation order over K <= 128 terms of order one; on the vLLM tree the largest error seen is
#: 1.2e-6, so 1e-5 (plus 1e-5 of the output's scale, which routed scaling and shared experts
#: raise to about 3) keeps a 10x margin while a wrong weight or expert still shows as O(0.1).
#: bfloat16 / float16: both paths round each stage's output to the dtype (8 / 11 significant
#: bits, so one rounding is 4e-3 / 5e-4 relative); a few roundings apart give the allowance below,
#: of which the vLLM tree's worst bf16 case on an H100 (16 and 256 tokens) uses 27%.
TOLERANCES: Mapping[str, tuple[float, float]] = {
    "float32": (1e-5, 1e-5),
    "bfloat16": (2e-2, 2e-2),
    "float16": (5e-3, 5e-3),
}


@dataclass(frozen=True)
class SmokeCase:
    """The outcome of one call site's forward pass."""

    path: str
    line: int
    class_name: str | None
    model: str
    #: The resolved constructor arguments (JSON values; ``present`` for stand-in modules).
    config: Mapping[str, object]
    assumed: tuple[str, ...]
    tokens: int
    #: ``None`` when the case did not get as far as comparing.
    max_error: float | None
    tolerance: float | None
    #: One of :data:`STATUSES`.
    status: str
    device: str
    backend: str
    notes: tuple[str, ...] = ()
    dtype: str = "float32"
    seconds: float = 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "line": self.line,
            "class": self.class_name,
            "model": self.model,
            "config": dict(self.config),
            "assumed": list(self.assumed),
            "tokens": self.tokens,
            "dtype": self.dtype,
            "max_error": self.max_error,
            "tolerance": self.tolerance,
            "status": self.status,
            "device": self.device,
            "backend": self.backend,
            "seconds": round(self.seconds, 3),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class SmokeReport:
    """Everything the smoke test found: one case per call site, plus signature findings.

    ``skipped_reason`` is set (and ``cases`` empty) when the test could not run at all; the
    findings of the signature check are reported either way, since they need no torch.
    """

    cases: tuple[SmokeCase, ...] = ()
    findings: tuple[Finding, ...] = ()
    device: str | None = None
    backend: str | None = None
    skipped_reason: str | None = None
    #: Wall time of the whole run, imports included.
    seconds: float = field(default=0.0, compare=False)

    @property
    def counts(self) -> dict[str, int]:
        """Number of cases per status, every status present."""
        return {status: sum(c.status == status for c in self.cases) for status in STATUSES}

    @property
    def ok(self) -> bool:
        """True when it ran and every case passed (findings are judged by the caller)."""
        return self.skipped_reason is None and all(c.status == "passed" for c in self.cases)

    def to_json(self) -> dict[str, object]:
        return {
            "device": self.device,
            "backend": self.backend,
            "skipped_reason": self.skipped_reason,
            "seconds": round(self.seconds, 3),
            "summary": self.counts,
            "cases": [case.to_json() for case in self.cases],
            "findings": [finding.to_json() for finding in self.findings],
        }


def smoke_available() -> str | None:
    """``None`` when torch and triton can be imported, else why not. Imports neither."""
    missing = [name for name in ("torch", "triton") if importlib.util.find_spec(name) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (pip install 'moe-migrate[smoke]')"
    return None


def run_smoke(
    sources: Mapping[str, bytes],
    root: Path,
    *,
    device: str | None = None,
    tokens: int = DEFAULT_TOKENS,
    seed: int = 0,
) -> SmokeReport:
    """Smoke-test every vLLM ``FusedMoE`` call site in ``sources``.

    ``device``: ``"cuda"``, ``"cpu"`` or ``None`` (CUDA when available). Only the ``.py`` files
    in ``sources`` are searched, so pass the whole tree (changed files with their new bytes),
    not just the changed files. Never raises for a site: a site that fails to build or run
    becomes an ``error`` case with the reason in its notes. Returns a report with
    ``skipped_reason`` set when torch or triton is missing or the kernels cannot run on the
    requested device, and with no cases (nothing imported) when there are no sites.
    """
    started = time.perf_counter()
    sites = find_sites(sources)
    findings = check_sites(sites, read_signature(sources, root))
    if not sites:  # nothing to build: torch and triton are not even imported
        return SmokeReport(findings=findings, seconds=time.perf_counter() - started)
    reason = smoke_available()
    if reason is None:
        reason, target = _prepare(device)
    if reason is not None:
        return SmokeReport(findings=findings, skipped_reason=reason,
                           seconds=time.perf_counter() - started)
    cases = tuple(run_site(site, device=target, tokens=tokens, seed=seed) for site in sites)
    return SmokeReport(
        cases=cases,
        findings=findings,
        device=_device_name(target),
        backend=_backend(target),
        seconds=time.perf_counter() - started,
    )


def run_site(site: Site, *, device: str, tokens: int = DEFAULT_TOKENS, seed: int = 0) -> SmokeCase:
    """Build, run and compare one site's layer on ``device`` (after :func:`run_smoke`'s setup)."""
    import torch

    started = time.perf_counter()
    dtype = torch.float32 if torch.device(device).type == "cpu" else torch.bfloat16
    dtype_name = str(dtype).removeprefix("torch.")
    case = {
        "path": site.path,
        "line": site.line,
        "class_name": site.class_name,
        "model": site.model,
        "config": site.kwargs,
        "assumed": site.assumed,
        "tokens": tokens,
        "device": _device_name(device),
        "backend": _backend(device),
        "dtype": dtype_name,
    }
    notes = list(site.notes)
    try:
        layer = _build(site.kwargs, dtype=dtype, device=device, seed=seed)
        notes += [n for n in layer.notes if n not in notes]
        hidden, logits = _inputs(layer, tokens, dtype, seed)
        with torch.no_grad():
            out = layer(hidden, logits)
            ref = layer.forward_reference(hidden, logits)
        max_error, tolerance = _compare(out, ref, dtype_name)
    except Exception as error:  # noqa: BLE001  # any failure of one site is that site's error
        notes.append(f"{type(error).__name__}: {error}")
        return SmokeCase(**case, max_error=None, tolerance=None, status="error",
                         notes=tuple(notes), seconds=time.perf_counter() - started)
    passed = max_error <= tolerance  # False for NaN
    return SmokeCase(**case, max_error=max_error, tolerance=tolerance,
                     status="passed" if passed else "failed", notes=tuple(notes),
                     seconds=time.perf_counter() - started)


# --------------------------------------------------------------------------------------------
# Runtime setup
# --------------------------------------------------------------------------------------------


def _prepare(device: str | None) -> tuple[str | None, str]:
    """Choose the device and switch the interpreter on where needed; (reason not to run, device).

    ``TRITON_INTERPRET`` is read when the kernels are defined, so it is set before
    ``moe_migrate.smoke.launch`` (and triton) is first imported, and cannot change afterwards.
    """
    try:
        import torch
    except ImportError as error:  # find_spec saw it, but it does not import
        return f"torch does not import: {error}", "cpu"
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        return "device 'cuda' was asked for but CUDA is not available", device
    launch = sys.modules.get("moe_migrate.smoke.launch")
    if device == "cpu":
        if launch is not None and not launch.interpreted():
            return (
                "the kernels were already compiled for CUDA in this process; the CPU needs "
                "Triton's interpreter (run again in a new process, or with TRITON_INTERPRET=1)",
                device,
            )
        os.environ.setdefault("TRITON_INTERPRET", "1")
    try:
        from moe_migrate.smoke import launch  # noqa: F401  # defines the kernels, now
    except Exception as error:  # noqa: BLE001  # a broken triton install is a reason to skip
        return f"triton does not import: {type(error).__name__}: {error}", device
    return None, device


def _backend(device: str) -> str:
    from moe_migrate.smoke.layer import backend_for

    return backend_for(device)


def _device_name(device: str) -> str:
    import torch

    if torch.device(device).type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(torch.device(device))})"
    return "cpu"


# --------------------------------------------------------------------------------------------
# Building and running one layer
# --------------------------------------------------------------------------------------------


def _build(kwargs: Mapping[str, object], *, dtype: Any, device: str, seed: int) -> Any:
    """The bundled layer for ``kwargs``, stand-ins for ``present`` modules, weights from ``seed``."""
    import torch

    from moe_migrate.smoke.layer import FusedMoE, init_weights

    arguments: dict[str, Any] = dict(kwargs)
    experts, hidden = int(arguments["num_experts"]), int(arguments["hidden_size"])
    inter = int(arguments["intermediate_size"])
    generator = torch.Generator().manual_seed(seed + 1)
    stand_ins = {
        "shared_experts": lambda: _shared_mlp(hidden, inter),
        "gate": lambda: torch.nn.Linear(hidden, experts, bias=False),
        "routed_input_transform": lambda: torch.nn.Linear(hidden, hidden, bias=False),
        # Of the order of sigmoid scores' spread, so that the bias changes some choices.
        "e_score_correction_bias": lambda: 0.1 * torch.randn(experts, generator=generator),
    }
    for name, make in stand_ins.items():
        if arguments.get(name) == PRESENT:
            arguments[name] = make()
    bias = arguments.get("e_score_correction_bias")
    if bias is not None:
        arguments["e_score_correction_bias"] = bias.to(device)
    layer = FusedMoE(params_dtype=dtype, **arguments)
    init_weights(layer, seed, device=device)
    return layer.to(dtype=dtype)


def _shared_mlp(hidden: int, inter: int) -> Any:
    """A gated SiLU MLP [T, H] -> [T, H], like the shared experts of DeepSeek or Qwen."""
    import torch

    class SharedMLP(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gate_up_proj = torch.nn.Linear(hidden, 2 * inter, bias=False)
            self.down_proj = torch.nn.Linear(inter, hidden, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
            return self.down_proj(torch.nn.functional.silu(gate) * up)

    return SharedMLP()


def _inputs(layer: Any, tokens: int, dtype: Any, seed: int) -> tuple[Any, Any]:
    """Hidden states [T, H] ~ N(0, 1) and router logits [T, E] ~ N(0, 1), from ``seed``."""
    import torch

    generator = torch.Generator().manual_seed(seed + 2)
    hidden = torch.randn(tokens, layer.hidden_size, generator=generator)
    logits = torch.randn(tokens, layer.num_experts, generator=generator)
    return hidden.to(layer.device, dtype), logits.to(layer.device, torch.float32)


def _compare(out: Any, ref: Any, dtype_name: str) -> tuple[float, float]:
    """(max |out - ref|, allowed error); NaN or a shape mismatch gives an infinite error."""
    import torch

    atol, rtol = TOLERANCES.get(dtype_name, TOLERANCES["bfloat16"])
    if out.shape != ref.shape:
        raise ValueError(f"kernels give {tuple(out.shape)}, reference {tuple(ref.shape)}")
    if out.numel() == 0:
        return 0.0, atol
    diff = (out.float() - ref.float()).abs()
    error = float("inf") if not torch.isfinite(diff).all() else float(diff.max())
    return error, atol + rtol * float(ref.float().abs().max())
