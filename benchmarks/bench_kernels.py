"""Time the fused MoE kernels against the reference loop and torch's grouped GEMMs.

    python benchmarks/bench_kernels.py                 # the table for RESULTS.md
    python benchmarks/bench_kernels.py --sweep         # also time every tile config per GEMM
    python benchmarks/bench_kernels.py --tokens 1 16   # a subset

Needs a CUDA GPU; prints Markdown. For each model-like shape and batch size it times, in bf16:

- fused:       launch.fused_experts (grouping, gate/up GEMM + activation, down GEMM + routing
               weights, top-k combine), captured in a CUDA graph;
- grouped_mm:  torch._grouped_mm twice on pre-grouped inputs (the two GEMMs alone: no
               grouping, no activation, no combine), in a CUDA graph, where torch has it;
- reference:   reference.fused_experts, the per-expert loop (fp32 math), eager.

Every timed call starts with a cold L2: a 256 MiB buffer is read between calls, outside the
timed region (read, not written, so that no dirty lines wait to be written back). The floor
is the bytes of the experts the batch touches divided by the H100's HBM3 bandwidth,
3.35 TB/s: no kernel that reads each touched weight once can beat it.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from moe_migrate.smoke import launch, reference  # noqa: E402

HBM_BYTES_PER_S = 3.35e12
TOKENS = (1, 16, 256, 4096)


@dataclasses.dataclass(frozen=True)
class Shape:
    name: str
    experts: int
    top_k: int
    hidden: int
    inter: int


SHAPES = (
    Shape("DeepSeek-V2-Lite-like", experts=64, top_k=6, hidden=2048, inter=1408),
    Shape("DeepSeek-V3-like", experts=256, top_k=8, hidden=7168, inter=2048),
)

# Sweep candidates besides the chosen config and its variant with(out) TMA: small tiles up
# to 64 rows per expert, large ones above.
SMALL_TILES = (
    launch.GemmConfig(16, 32, 256, 1, num_warps=4, num_stages=4),
    launch.GemmConfig(16, 64, 128, 1, num_warps=4, num_stages=4),
    launch.GemmConfig(16, 64, 256, 1, num_warps=4, num_stages=3),
    launch.GemmConfig(16, 128, 128, 1, num_warps=4, num_stages=4),
    launch.GemmConfig(16, 64, 128, 1, num_warps=4, num_stages=6),
    launch.GemmConfig(32, 64, 128, 1, num_warps=4, num_stages=4),
    launch.GemmConfig(32, 128, 64, 4, num_warps=4, num_stages=4),
    launch.GemmConfig(64, 64, 64, 8, num_warps=4, num_stages=4),
)
LARGE_TILES = {
    "gate_up": (
        launch.GemmConfig(128, 128, 64, 2, num_warps=8, num_stages=4, SPLIT_TAIL=True,
                          USE_TMA=True),
        launch.GemmConfig(128, 128, 64, 2, num_warps=8, num_stages=3, SPLIT_TAIL=True,
                          USE_TMA=True),
        launch.GemmConfig(128, 128, 64, 2, num_warps=8, num_stages=4, USE_TMA=True,
                          PERSISTENT=1),
        launch.GemmConfig(128, 128, 64, 4, num_warps=8, num_stages=4, USE_TMA=True,
                          PERSISTENT=1),
        launch.GemmConfig(128, 128, 64, 8, num_warps=8, num_stages=4, USE_TMA=True,
                          PERSISTENT=1),
        launch.GemmConfig(128, 128, 64, 4, num_warps=8, num_stages=3, USE_TMA=True,
                          PERSISTENT=1),
        launch.GemmConfig(128, 128, 64, 8, num_warps=8, num_stages=3, USE_TMA=True,
                          PERSISTENT=1),
    ),
    "down": (
        launch.GemmConfig(128, 256, 64, 8, num_warps=8, num_stages=4, SPLIT_TAIL=True),
        launch.GemmConfig(128, 256, 64, 8, num_warps=8, num_stages=4, SPLIT_TAIL=True,
                          USE_TMA=True),
        launch.GemmConfig(128, 256, 64, 8, num_warps=8, num_stages=4, USE_TMA=True,
                          PERSISTENT=1),
        launch.GemmConfig(128, 256, 64, 4, num_warps=8, num_stages=4, USE_TMA=True,
                          PERSISTENT=1),
    ),
}


def candidates(gemm: str, config: launch.GemmConfig, rows_per_expert: float):
    """The configs --sweep times for one GEMM: the chosen one, it with(out) TMA, and
    SMALL_TILES or (more than 64 rows per expert) LARGE_TILES."""
    found = [config, dataclasses.replace(config, USE_TMA=not config.USE_TMA)]
    found += LARGE_TILES[gemm] if rows_per_expert > 64 else SMALL_TILES
    return list(dict.fromkeys(found))


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------


class Timer:
    """Median GPU time of a callable, each call after an L2 flush, optionally as a graph."""

    def __init__(self, reps: int):
        self.reps = reps
        self.flush = torch.ones(256 * 2**20, dtype=torch.int8, device="cuda")

    def __call__(self, fn, *, graph: bool = True, reps: int | None = None) -> float:
        fn()  # compile, allocate
        torch.cuda.synchronize()
        run = fn
        if graph:
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                fn()
            run = g.replay
        times = []
        for _ in range(reps or self.reps):
            self.flush.sum()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) * 1e3)  # microseconds
        return statistics.median(times)


# --------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
    shape: Shape
    tokens: int
    x: torch.Tensor
    w13: torch.Tensor
    w2: torch.Tensor
    topk_weights: torch.Tensor
    topk_ids: torch.Tensor

    @property
    def touched(self) -> int:
        return int(torch.unique(self.topk_ids).numel())

    @property
    def floor_us(self) -> float:
        per_expert = 3 * self.shape.hidden * self.shape.inter * self.w13.element_size()
        return self.touched * per_expert / HBM_BYTES_PER_S * 1e6


def make_weights(shape: Shape, seed: int = 0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    w13 = torch.randn(shape.experts, 2 * shape.inter, shape.hidden, device="cuda",
                      dtype=torch.bfloat16, generator=gen) * shape.hidden**-0.5
    w2 = torch.randn(shape.experts, shape.hidden, shape.inter, device="cuda",
                     dtype=torch.bfloat16, generator=gen) * shape.inter**-0.5
    return w13, w2


def make_case(shape: Shape, tokens: int, w13, w2, seed: int = 1) -> Case:
    gen = torch.Generator(device="cuda").manual_seed(seed + tokens)
    x = torch.randn(tokens, shape.hidden, device="cuda", dtype=torch.bfloat16, generator=gen)
    logits = torch.randn(tokens, shape.experts, device="cuda", generator=gen)
    weights, ids = torch.topk(torch.softmax(logits, dim=-1), shape.top_k, dim=-1)
    return Case(shape, tokens, x, w13, w2, weights, ids.to(torch.int32))


def fused(case: Case):
    return lambda: launch.fused_experts(case.x, case.w13, case.w2, case.topk_weights,
                                        case.topk_ids)


def reference_loop(case: Case):
    return lambda: reference.fused_experts(case.x, case.w13, case.w2, case.topk_weights,
                                           case.topk_ids)


def grouped_mm(case: Case):
    """torch._grouped_mm for the two GEMMs on pre-grouped rows, or None without it."""
    if not hasattr(torch, "_grouped_mm"):
        return None
    groups = launch.group_tokens(case.topk_ids, case.shape.experts)
    xs = case.x[groups.sorted_slots // case.shape.top_k].contiguous()
    ends = groups.expert_offsets[1:].contiguous()
    h = torch.randn(xs.shape[0], case.shape.inter, device="cuda", dtype=torch.bfloat16)
    w13_t, w2_t = case.w13.transpose(1, 2), case.w2.transpose(1, 2)  # [E, K, N] views

    def run():
        torch._grouped_mm(xs, w13_t, offs=ends)
        torch._grouped_mm(h, w2_t, offs=ends)

    return run


def stages(case: Case) -> dict[str, object]:
    """Each stage of fused_experts alone, on inputs prepared outside the timed call."""
    act = reference.resolve_activation("silu")
    top_k, experts = case.shape.top_k, case.shape.experts
    groups = launch.group_tokens(case.topk_ids, experts)
    h = launch.grouped_gate_up(case.x, case.w13, groups, case.topk_weights, top_k, activation=act)
    y = launch.grouped_down(h, case.w2, groups, case.topk_weights)
    return {
        "group": lambda: launch.group_tokens(case.topk_ids, experts),
        "gate_up": lambda: launch.grouped_gate_up(case.x, case.w13, groups, case.topk_weights,
                                                  top_k, activation=act),
        "down": lambda: launch.grouped_down(h, case.w2, groups, case.topk_weights),
        "combine": lambda: launch.combine_topk(y, top_k),
    }


def check(case: Case) -> float:
    out = launch.fused_experts(case.x, case.w13, case.w2, case.topk_weights, case.topk_ids)
    ref = reference.fused_experts(case.x, case.w13, case.w2, case.topk_weights, case.topk_ids)
    return (out.float() - ref.float()).abs().max().item()


# --------------------------------------------------------------------------------------
# Sweep: each GEMM alone, every candidate tile config
# --------------------------------------------------------------------------------------


def sweep(case: Case, timer: Timer) -> list[str]:
    """Time each GEMM alone under every candidate config."""
    groups = launch.group_tokens(case.topk_ids, case.shape.experts)
    act = reference.resolve_activation("silu")
    top_k, experts = case.shape.top_k, case.shape.experts
    h = launch.grouped_gate_up(case.x, case.w13, groups, case.topk_weights, top_k,
                               activation=act)
    stages = {
        "gate_up": lambda: launch.grouped_gate_up(case.x, case.w13, groups, case.topk_weights,
                                                  top_k, activation=act),
        "down": lambda: launch.grouped_down(h, case.w2, groups, case.topk_weights),
    }
    rows = []
    original = launch.pick_config
    num_slots = case.tokens * top_k
    for stage, fn in stages.items():
        chosen = original(stage, num_slots, experts)
        results = []
        try:
            for config in candidates(stage, chosen, num_slots / experts):
                launch.pick_config = lambda *_, c=config: c
                try:
                    results.append((timer(fn, reps=10), config))
                except Exception as error:  # out of resources for this shape: skip it
                    print(f"  {stage} {_short(config)}: {type(error).__name__}", file=sys.stderr)
                else:
                    print(f"  {stage} {results[-1][0]:.1f} {_short(config)}", file=sys.stderr,
                          flush=True)
        finally:
            launch.pick_config = original
        best = sorted(results, key=lambda r: r[0])[:3]
        t_chosen = next((t for t, c in results if c == chosen), None)
        rows.append(
            f"| {case.shape.name} | {case.tokens} | {stage} | "
            + " ; ".join(f"{t:.1f} {_short(c)}" for t, c in best)
            + f" | {_fmt(t_chosen)} |"
        )
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def _short(c: launch.GemmConfig) -> str:
    flags = [name for name, on in (("split", c.SPLIT_TAIL), ("tma", c.USE_TMA),
                                   (f"persistent{c.PERSISTENT}", c.PERSISTENT)) if on]
    return (f"M{c.BLOCK_SIZE_M} N{c.BLOCK_SIZE_N} K{c.BLOCK_SIZE_K} G{c.GROUP_SIZE_M} "
            f"w{c.num_warps} s{c.num_stages}" + "".join(" " + f for f in flags))


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=list(TOKENS))
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--sweep", action="store_true", help="time every tile config per GEMM")
    parser.add_argument("--no-reference", action="store_true", help="skip the slow loop")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_kernels.py needs a CUDA GPU", file=sys.stderr)
        return 2

    timer = Timer(args.reps)
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"triton {__import__('triton').__version__}\n")
    print("| shape | tokens | experts touched | floor (us) | fused (us) | fused / floor "
          "| grouped_mm x2 (us) | fused / grouped_mm | reference loop (us) | max abs err |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    sweeps, breakdown = [], []
    for shape in SHAPES:
        w13, w2 = make_weights(shape)
        for tokens in args.tokens:
            case = make_case(shape, tokens, w13, w2)
            error = check(case)
            t_fused = timer(fused(case))
            mm = grouped_mm(case)
            t_mm = timer(mm) if mm is not None else None
            t_ref = None if args.no_reference else timer(reference_loop(case), graph=False,
                                                         reps=3)
            print(f"| {shape.name} | {tokens} | {case.touched} | {case.floor_us:.1f} "
                  f"| {t_fused:.1f} | {t_fused / case.floor_us:.2f} "
                  f"| {_fmt(t_mm)} | {_ratio(t_fused, t_mm)} | {_fmt(t_ref)} | {error:.3g} |",
                  flush=True)
            parts = {name: timer(fn) for name, fn in stages(case).items()}
            breakdown.append(f"| {shape.name} | {tokens} | "
                             + " | ".join(f"{t:.1f}" for t in parts.values())
                             + f" | {sum(parts.values()):.1f} | {t_fused:.1f} |")
            if args.sweep:
                sweeps += sweep(case, timer)
        del w13, w2
        torch.cuda.empty_cache()
    print("\nEach stage alone (us; cold L2 before each):\n")
    print("| shape | tokens | group | gate_up | down | combine | sum | fused |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(breakdown))
    if sweeps:
        print("\n| shape | tokens | GEMM | best three configs (us) | chosen config (us) |")
        print("|---|---:|---|---|---:|")
        print("\n".join(sweeps))
    return 0


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _ratio(a: float, b: float | None) -> str:
    return "n/a" if b is None else f"{a / b:.2f}"


if __name__ == "__main__":
    sys.exit(main())
