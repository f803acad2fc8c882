"""moe-output-tuple, all rules together: a finding that the first run reports (and renames
past) is reported again by the second run, on the rewritten file, at the same line."""

from __future__ import annotations

import pytest

from moe_migrate.codemod.outcomes import Changed
from moe_migrate.codemod.testing import run

OLD = "from vllm.model_executor.layers.fused_moe import SharedFusedMoE\n"
BUILT = (
    "class MoE:\n"
    "    def __init__(self, mlp):\n"
    "        self.experts = SharedFusedMoE(shared_experts=mlp, num_experts=8)\n\n"
    "    def forward(self, x, logits):\n"
)

_cases = [
    pytest.param(
        OLD + "\n\ndef routed(h, r):\n"
        "    m = SharedFusedMoE(shared_experts=None, num_experts=8)\n"
        "    shared, routed = m(h, r)\n"
        "    return routed\n",
        (6,),
        id="shared-experts-none",
    ),
    pytest.param(
        OLD + "\n\n" + BUILT + "        fused = self.experts\n"
        "        shared_out, routed_out = fused(x, logits)\n"
        "        return shared_out + routed_out\n",
        (10,),
        id="local-alias",
    ),
    pytest.param(
        "from typing import cast\n\n" + OLD + "\n\n" + BUILT
        + "        fused = cast(SharedFusedMoE, self.experts)\n"
        "        out = fused(hidden_states=x, router_logits=logits)\n"
        "        return out[0] + out[1]\n",
        (13,),
        id="cast-of-a-built-layer",
    ),
]


@pytest.mark.parametrize(("source", "lines"), _cases)
def test_the_second_run_reports_what_the_first_did(all_rules, source: str, lines: tuple[int, ...]) -> None:
    first = run(all_rules, source)
    assert isinstance(first, Changed)  # renamed: the file no longer names the class
    assert b"SharedFusedMoE" not in first.after
    again = run(all_rules, first.after)

    def found(outcome) -> tuple[int, ...]:
        return tuple(f.line for f in outcome.findings if f.rule == "moe-output-tuple")

    assert found(first) == lines
    assert found(again) == lines
