"""The signature check: keywords the target tree's FusedMoE.__init__ does not accept."""

from __future__ import annotations

import textwrap
from pathlib import Path

from moe_migrate.codemod.outcomes import Severity
from moe_migrate.smoke.signature import (
    LAYER_PATHS,
    RULE,
    Signature,
    bundled_signature,
    check_sites,
    read_signature,
    signature_from_source,
)
from moe_migrate.smoke.sites import find_sites

LAYER = LAYER_PATHS[0]

# A target tree's layer.py: FusedMoE takes shared_experts= itself, and nothing overlap-related.
TARGET_LAYER = b'''
class FusedMoE(CustomOp):
    def __init__(self, num_experts, top_k, hidden_size, intermediate_size,
                 params_dtype=None, *, shared_experts=None, gate=None):
        super().__init__()
'''

# The older SharedFusedMoE accepted use_overlapped=; a migrated call still passes it.
MODEL = textwrap.dedent(
    """\
    from vllm.model_executor.layers.fused_moe import FusedMoE

    class Qwen2MoeSparseMoeBlock:
        def __init__(self, config):
            self.experts = FusedMoE(
                shared_experts=self.shared_expert,
                num_experts=config.num_experts,
                top_k=config.num_experts_per_tok,
                hidden_size=config.hidden_size,
                intermediate_size=config.moe_intermediate_size,
                use_overlapped=True,
            )
    """
).encode()
MODEL_PATH = "vllm/model_executor/models/qwen2_moe.py"


def test_reads_the_target_tree_from_sources() -> None:
    signature = read_signature({LAYER: TARGET_LAYER}, Path("/nonexistent"))
    assert signature == Signature(
        source=LAYER,
        positional=("num_experts", "top_k", "hidden_size", "intermediate_size", "params_dtype"),
        keyword_only=("shared_experts", "gate"),
    )
    assert signature.accepts("gate") and not signature.accepts("use_overlapped")


def test_reads_the_disk_when_sources_lack_the_layer(tmp_path: Path) -> None:
    layer = tmp_path / LAYER
    layer.parent.mkdir(parents=True)
    layer.write_bytes(TARGET_LAYER)
    assert read_signature({}, tmp_path).keyword_only == ("shared_experts", "gate")


def test_package_rooted_tree_and_shortest_copy_win() -> None:
    other = TARGET_LAYER.replace(b"gate=None", b"gate=None, extra=None")
    sources = {
        "third_party/vllm/" + LAYER: other,
        LAYER_PATHS[1]: TARGET_LAYER,
    }
    assert read_signature(sources, Path("/nonexistent")).source == LAYER_PATHS[1]


def test_falls_back_to_the_bundled_layer() -> None:
    broken = {LAYER: b"class FusedMoE(:\n"}
    for sources in ({}, broken, {LAYER: b"class Other: pass\n"}):
        signature = read_signature(sources, Path("/nonexistent"))
        assert signature.source == "bundled:layer.py"
    bundled = bundled_signature()
    assert bundled.positional[:4] == ("num_experts", "top_k", "hidden_size", "intermediate_size")
    assert {"shared_experts", "gate", "routed_input_transform"} <= set(bundled.positional)
    assert not bundled.accepts("use_overlapped")


def test_sharedfusedmoe_only_kwarg_is_an_error_at_the_argument() -> None:
    sites = find_sites({MODEL_PATH: MODEL})
    findings = check_sites(sites, read_signature({LAYER: TARGET_LAYER}, Path(".")))
    (finding,) = findings
    assert finding.rule == RULE == "smoke-unknown-kwarg"
    assert finding.severity is Severity.ERROR
    assert (finding.path, finding.line, finding.column) == (MODEL_PATH, 11, 13)
    assert (finding.end_line, finding.end_column) == (11, 32)
    assert "`use_overlapped`" in finding.message and LAYER in finding.message
    assert finding.fix is not None and "Remove `use_overlapped=...`" in finding.fix


def test_bundled_signature_flags_the_same_kwarg() -> None:
    (finding,) = check_sites(find_sites({MODEL_PATH: MODEL}), bundled_signature())
    assert "bundled" in finding.message


def test_accepted_calls_have_no_findings() -> None:
    clean = b"\n".join(line for line in MODEL.split(b"\n") if b"use_overlapped" not in line)
    assert check_sites(find_sites({MODEL_PATH: clean}), bundled_signature()) == ()


def test_var_keyword_accepts_anything() -> None:
    layer = b"class FusedMoE:\n    def __init__(self, num_experts, **kwargs): pass\n"
    signature = signature_from_source(layer, LAYER)
    assert signature is not None and signature.accepts("use_overlapped")
    assert check_sites(find_sites({MODEL_PATH: MODEL}), signature) == ()


def test_positional_overflow_and_duplicates() -> None:
    code = b"""from vllm.model_executor.layers.fused_moe import FusedMoE
a = FusedMoE(8, 2, 64, 32, None, False)
b = FusedMoE(8, 2, top_k=2)
"""
    signature = read_signature({LAYER: TARGET_LAYER}, Path("."))
    findings = check_sites(find_sites({MODEL_PATH: code}), signature)
    assert [(f.line, f.column) for f in findings] == [(2, 5), (3, 20)]
    assert "at most 5 positional arguments" in findings[0].message
    assert "passed by position" in findings[1].message
