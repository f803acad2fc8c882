"""On real hardware plugins: the Python sources of vLLM plugin wheels from PyPI.

Each is downloaded once into ``.cache/`` (a few MB to 30 MB). Versions written against the
vLLM that still had ``SharedFusedMoE`` get exactly the findings below, at these lines (every
one was read against the source and judged true); versions written after the removal get
nothing. Marked ``vllm``; run by CI.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import moe_migrate, wheel_sources

pytestmark = pytest.mark.vllm

ASCEND_FUSED_MOE = "vllm_ascend/ops/fused_moe/fused_moe.py"
ASCEND_310P = "vllm_ascend/_310p/fused_moe/fused_moe.py"

#: (package, version, top-level directory) -> (files changed, sorted (rule, path, line)).
EXPECTED = {
    # Huawei Ascend, vLLM 0.18: subclasses of SharedFusedMoE that override forward and
    # __init__ (held whole, so nothing is rewritten), the pair their forward returns, the
    # attributes they set for the removed class, and a registry of replacements by name.
    ("vllm-ascend", "0.18.0", "vllm_ascend"): (
        [],
        [
            ("moe-output-tuple", ASCEND_310P, 290),
            ("moe-output-tuple", ASCEND_310P, 296),
            ("moe-output-tuple", ASCEND_FUSED_MOE, 677),
            ("moe-output-tuple", ASCEND_FUSED_MOE, 683),
            ("shared-fused-moe-only-api", ASCEND_310P, 273),
            ("shared-fused-moe-only-api", ASCEND_310P, 274),
            ("shared-fused-moe-only-api", ASCEND_FUSED_MOE, 581),
            ("shared-fused-moe-only-api", ASCEND_FUSED_MOE, 582),
            ("shared-fused-moe-registry", "vllm_ascend/utils.py", 652),
            ("shared-fused-moe-registry", "vllm_ascend/utils.py", 686),
            ("shared-fused-moe-subclass", ASCEND_310P, 262),
            ("shared-fused-moe-subclass", ASCEND_FUSED_MOE, 569),
        ],
    ),
    # Kunlun: a model file importing the class from its older module; renamed, and the
    # unpacked output reported.
    ("vllm-kunlun", "0.11.1", "vllm_kunlun"): (
        ["vllm_kunlun/models/deepseek_v2.py"],
        [("moe-output-tuple", "vllm_kunlun/models/deepseek_v2.py", 286)],
    ),
    # Rebellions: monkeypatches of SharedFusedMoE (`__init__`, `forward_oot`, `del .forward`).
    ("vllm-rbln", "0.10.4", "vllm_rbln"): (
        [],
        [
            ("shared-fused-moe-patch", "vllm_rbln/model_executor/layers/fused_moe/shared_fused_moe.py", line)
            for line in (84, 85, 88)
        ],
    ),
    # Written after the removal: nothing to do, nothing to report (Ascend's deepseek_v4.py
    # unpacks FusedMoE's output only after testing `isinstance(out, tuple)`).
    ("vllm-ascend", "0.20.2rc1", "vllm_ascend"): ([], []),
    ("vllm-rbln", "0.12.0", "vllm_rbln"): ([], []),
}


@pytest.fixture
def plugin(request, tmp_path) -> Path:
    """A copy of the plugin's sources outside the repository (git ignores ``.cache/``)."""
    name, version, package = request.param
    tree = tmp_path / package
    shutil.copytree(wheel_sources(name, version, package) / package, tree)
    return tmp_path


@pytest.mark.parametrize("plugin", list(EXPECTED), indirect=True, ids=lambda key: f"{key[0]}-{key[1]}")
def test_a_real_plugin_gets_exactly_its_findings(plugin: Path, request) -> None:
    changed, findings = EXPECTED[request.node.callspec.params["plugin"]]
    result = moe_migrate("--check", "--output-format", "json", str(plugin))
    report = json.loads(result.stdout)
    assert report["summary"]["failed"] == 0
    assert sorted(f["path"] for f in report["files"] if f["status"] != "unchanged") == changed
    assert sorted((f["rule"], f["path"], f["line"]) for f in report["findings"]) == findings
    assert result.returncode == (1 if changed or findings else 0)


@pytest.mark.parametrize("plugin", [("vllm-kunlun", "0.11.1", "vllm_kunlun")], indirect=True, ids=["vllm-kunlun"])
def test_a_migrated_plugin_still_reports_what_needs_a_human(plugin: Path) -> None:
    model = plugin / "vllm_kunlun/models/deepseek_v2.py"
    before = model.read_bytes()
    moe_migrate(str(plugin))
    after = model.read_bytes()
    assert b"SharedFusedMoE" in before and b"SharedFusedMoE" not in after
    compile(after, str(model), "exec")
    again = json.loads(moe_migrate("--check", "--output-format", "json", str(plugin)).stdout)
    assert [f["status"] for f in again["files"] if f["status"] != "unchanged"] == []
    assert [(f["rule"], f["path"]) for f in again["findings"]] == [
        ("moe-output-tuple", "vllm_kunlun/models/deepseek_v2.py")
    ]
