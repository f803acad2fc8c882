"""Call-site discovery and argument resolution, on snippets shaped like real vLLM model files."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from moe_migrate.smoke import configs
from moe_migrate.smoke.sites import PRESENT, SEMANTIC, Site, find_sites

MODELS = "vllm/model_executor/models"


def sites_of(code: str, path: str = f"{MODELS}/deepseek_v2.py") -> list[Site]:
    return find_sites({path: textwrap.dedent(code).encode()})


def only(code: str, path: str = f"{MODELS}/deepseek_v2.py") -> Site:
    (site,) = sites_of(code, path)
    return site


# --------------------------------------------------------------------------------------------
# Which calls are sites
# --------------------------------------------------------------------------------------------

CALLEES = {
    "plain": ("from vllm.model_executor.layers.fused_moe import FusedMoE", "FusedMoE"),
    "layer module": ("from vllm.model_executor.layers.fused_moe.layer import FusedMoE", "FusedMoE"),
    "alias": ("from vllm.model_executor.layers.fused_moe import FusedMoE as VMoE", "VMoE"),
    "module alias": ("from vllm.model_executor.layers import fused_moe as fm", "fm.FusedMoE"),
    "dotted import": (
        "import vllm.model_executor.layers.fused_moe",
        "vllm.model_executor.layers.fused_moe.FusedMoE",
    ),
    "import as": ("import vllm.model_executor.layers.fused_moe.layer as L", "L.FusedMoE"),
    "relative": ("from ..layers.fused_moe import FusedMoE", "FusedMoE"),
    "relative module": ("from ..layers import fused_moe", "fused_moe.FusedMoE"),
}


@pytest.mark.parametrize("name", sorted(CALLEES))
def test_callee_found_by_qualified_name(name: str) -> None:
    imports, callee = CALLEES[name]
    site = only(
        f"""
        {imports}

        class M:
            def __init__(self, config):
                self.experts = {callee}(num_experts=4, top_k=2, hidden_size=8,
                                        intermediate_size=4)
        """
    )
    assert site.callee == callee
    assert site.class_name == "M"
    assert site.kwargs["num_experts"] == 4


def test_relative_import_when_root_is_the_vllm_package() -> None:
    code = """
        from ..layers.fused_moe import FusedMoE
        x = FusedMoE(num_experts=4, top_k=2, hidden_size=8, intermediate_size=4)
    """
    assert len(sites_of(code, "model_executor/models/mixtral.py")) == 1


@pytest.mark.parametrize(
    "code",
    [
        # The plugin's own class of that name.
        """
        from torch import nn
        class FusedMoE(nn.Module):
            pass
        x = FusedMoE(num_experts=4)
        """,
        # Imported from somewhere else.
        """
        from my_plugin.layers import FusedMoE
        x = FusedMoE(num_experts=4)
        """,
        # A parameter that shadows the import.
        """
        from vllm.model_executor.layers.fused_moe import FusedMoE
        def build(FusedMoE):
            return FusedMoE(num_experts=4)
        """,
        # Other vLLM classes and look-alike names.
        """
        from vllm.model_executor.layers.fused_moe import SharedFusedMoE, FusedMoEConfig
        a = SharedFusedMoE(num_experts=4)
        b = FusedMoEConfig(num_experts=4)
        """,
        # A relative import outside vLLM's fused_moe package.
        """
        from .layers import FusedMoE
        x = FusedMoE(num_experts=4)
        """,
    ],
    ids=["own-class", "other-module", "shadowed", "other-vllm-class", "relative-elsewhere"],
)
def test_lookalikes_are_not_sites(code: str) -> None:
    assert sites_of(code, "my_plugin/models/deepseek_v2.py") == []


def test_function_level_import_and_module_level_call() -> None:
    code = """
        def build():
            from vllm.model_executor.layers.fused_moe import FusedMoE
            return FusedMoE(num_experts=4, top_k=1, hidden_size=8, intermediate_size=4)
        """
    site = only(code)
    assert site.class_name is None
    assert site.kwargs["top_k"] == 1


def test_find_sites_sorts_prefilters_and_skips_unparsable_files() -> None:
    call = b"from vllm.model_executor.layers.fused_moe import FusedMoE\nFusedMoE(top_k=1)\n"
    sources = {
        "b/qwen2_moe.py": call,
        "a/mixtral.py": b"\n" + call,
        "a/broken.py": b"FusedMoE(\n",
        "a/notes.txt": call,
        "a/other.py": b"print('no experts here')\n",
    }
    assert [(s.path, s.line) for s in find_sites(sources)] == [
        ("a/mixtral.py", 3),
        ("b/qwen2_moe.py", 2),
    ]


def test_positions_are_one_based_characters() -> None:
    code = (
        "from vllm.model_executor.layers.fused_moe import FusedMoE\n"
        "é = 1; layer = FusedMoE(top_k=2,\n"
        "    num_experts=4)\n"
    )
    site = only(code)
    assert (site.line, site.column, site.end_line, site.end_column) == (2, 16, 3, 19)
    assert [(k.name, k.line, k.column, k.end_column) for k in site.keywords] == [
        ("top_k", 2, 25, 32),
        ("num_experts", 3, 5, 18),
    ]


def test_latin1_source_with_coding_cookie() -> None:
    code = (
        "# -*- coding: latin-1 -*-\n"
        "from vllm.model_executor.layers.fused_moe import FusedMoE\n"
        "s = 'caf\xe9'; x = FusedMoE(top_k=1)\n"
    ).encode("latin-1")
    (site,) = find_sites({"p/mixtral.py": code})
    assert site.column == 17


# --------------------------------------------------------------------------------------------
# Resolving arguments
# --------------------------------------------------------------------------------------------

DEEPSEEK = """
from torch import nn
from vllm.model_executor.layers.fused_moe import FusedMoE
from vllm._aiter_ops import rocm_aiter_ops


class DeepseekV2MoE(nn.Module):
    def __init__(self, config, parallel_config, quant_config=None, prefix: str = ""):
        super().__init__()
        self.routed_scaling_factor = getattr(config, "routed_scaling_factor", 1.0)
        self.n_routed_experts: int = config.n_routed_experts
        if config.hidden_act != "silu":
            raise ValueError("Only silu is supported for now.")
        self.gate = GateLinear(config.hidden_size, config.n_routed_experts)
        if getattr(config, "topk_method", None) == "noaux_tc":
            self.gate.e_score_correction_bias = nn.Parameter(torch.empty(4))
        else:
            self.gate.e_score_correction_bias = None
        self.is_rocm_aiter_moe_enabled = rocm_aiter_ops.is_fused_moe_enabled()
        if config.n_shared_experts is None:
            self.shared_experts = None
        else:
            self.shared_experts = DeepseekV2MLP(hidden_size=config.hidden_size)
        self.experts = FusedMoE(
            shared_experts=self.shared_experts,
            gate=self.gate,
            num_experts=config.n_routed_experts,
            top_k=config.num_experts_per_tok,
            hidden_size=config.hidden_size,
            intermediate_size=config.moe_intermediate_size,
            reduce_results=False,
            renormalize=config.norm_topk_prob,
            quant_config=quant_config,
            use_grouped_topk=True,
            num_expert_group=getattr(config, "n_group", 1),
            topk_group=getattr(config, "topk_group", 1),
            prefix=f"{prefix}.experts",
            scoring_func=getattr(config, "scoring_func", "softmax"),
            routed_scaling_factor=1.0
            if not self.is_rocm_aiter_moe_enabled
            else self.routed_scaling_factor,
            e_score_correction_bias=self.gate.e_score_correction_bias,
        )
"""


def test_deepseek_resolves_fully_against_its_tiny_config() -> None:
    site = only(DEEPSEEK)
    tiny = configs.load_configs()["deepseek_v2"].values
    assert site.model == "deepseek_v2"
    assert site.assumed == ()
    assert site.kwargs == {
        "num_experts": tiny["n_routed_experts"],
        "top_k": tiny["num_experts_per_tok"],
        "hidden_size": tiny["hidden_size"],
        "intermediate_size": tiny["moe_intermediate_size"],
        "renormalize": True,
        "use_grouped_topk": True,
        "num_expert_group": tiny["n_group"],
        "topk_group": tiny["topk_group"],
        "scoring_func": "sigmoid",
        "routed_scaling_factor": 1.0,  # ROCm AITER is off on the smoke device
        "e_score_correction_bias": PRESENT,  # topk_method == "noaux_tc"
        "gate": PRESENT,
        "shared_experts": PRESENT,  # n_shared_experts is 1
    }
    assert [k.name for k in site.keywords][:3] == ["shared_experts", "gate", "num_experts"]


def test_getattr_default_when_the_config_lacks_the_attribute() -> None:
    code = """
        from vllm.model_executor.layers.fused_moe import FusedMoE
        class M:
            def __init__(self, config):
                self.experts = FusedMoE(
                    num_experts=config.num_local_experts,
                    top_k=getattr(config, "no_such_attribute", 3),
                    hidden_size=config.hidden_size,
                    intermediate_size=getattr(config, "moe_intermediate_size", 7),
                    scoring_func=getattr(config, "scoring_func", "softmax"),
                )
        """
    site = only(code, f"{MODELS}/mixtral.py")
    assert site.kwargs["top_k"] == 3
    assert site.kwargs["intermediate_size"] == 7  # mixtral's tiny config has none
    assert site.kwargs["scoring_func"] == "softmax"
    assert site.assumed == ()


def test_config_spellings() -> None:
    code = """
        from vllm.model_executor.layers.fused_moe import FusedMoE
        class M:
            def __init__(self, vllm_config, hf_config):
                self.config = vllm_config.model_config.hf_config
                text = self.config.get_text_config()
                self.experts = FusedMoE(
                    num_experts=self.config.num_local_experts,
                    top_k=hf_config.num_experts_per_tok,
                    hidden_size=text.hidden_size,
                    intermediate_size=vllm_config.model_config.hf_text_config.intermediate_size,
                )
        """
    site = only(code, f"{MODELS}/mixtral.py")
    assert site.assumed == ()
    assert (site.kwargs["num_experts"], site.kwargs["top_k"]) == (8, 2)


def test_self_attributes_locals_and_conditionals() -> None:
    code = """
        from vllm.model_executor.layers.fused_moe import FusedMoE
        from vllm.distributed import get_tensor_model_parallel_world_size

        class Block:
            def __init__(self, config, layer_id: int = 0):
                self.tp_size = get_tensor_model_parallel_world_size()
                if isinstance(config.moe_topk, list):
                    top_k = config.moe_topk[layer_id]
                else:
                    top_k = config.moe_topk
                intermediate = config.intermediate_size
                if config.moe_intermediate_size is not None:
                    intermediate = config.moe_intermediate_size * self.tp_size
                self.score = "sigmoid" if config.num_experts > 8 else "softmax"
                self.experts = FusedMoE(
                    num_experts=config.num_experts,
                    top_k=top_k,
                    hidden_size=config.hidden_size,
                    intermediate_size=intermediate,
                    renormalize=top_k > 1,
                    scoring_func=self.score,
                    routed_scaling_factor=max(1, 2.5),
                    has_bias=not self.tp_size == 1,
                )
        """
    site = only(code, f"{MODELS}/hunyuan_v1.py")
    assert site.assumed == ()
    assert site.kwargs["top_k"] == 8
    assert site.kwargs["intermediate_size"] == 32
    assert site.kwargs["renormalize"] is True
    assert site.kwargs["scoring_func"] == "sigmoid"
    assert site.kwargs["routed_scaling_factor"] == 2.5
    assert site.kwargs["has_bias"] is False


def test_self_attribute_assigned_in_another_method() -> None:
    code = """
        from vllm.model_executor.layers.fused_moe import FusedMoE
        class Block:
            top_k = 2

            def __init__(self, config):
                self._setup(config)
                self.experts = FusedMoE(
                    num_experts=self.num_experts,
                    top_k=self.top_k,
                    hidden_size=config.hidden_size,
                    intermediate_size=config.intermediate_size,
                    custom_routing_function=self.route,
                )

            def _setup(self, config):
                self.num_experts = config.num_local_experts

            @staticmethod
            def route(hidden_states, gating_output, topk, renormalize):
                pass
        """
    site = only(code, f"{MODELS}/mixtral.py")
    assert site.assumed == ()
    assert site.kwargs["num_experts"] == 8
    assert site.kwargs["top_k"] == 2
    assert site.kwargs["custom_routing_function"] == "Block.route"


def test_staticmethod_routing_function_by_class_name() -> None:
    code = """
        from vllm.model_executor.layers.fused_moe import FusedMoE
        class Llama4MoE:
            @staticmethod
            def custom_routing_function(hidden_states, gating_output, topk, renormalize):
                pass

            def __init__(self, vllm_config):
                config = vllm_config.model_config.hf_config
                self.experts = FusedMoE(
                    num_experts=config.num_local_experts,
                    top_k=config.num_experts_per_tok,
                    hidden_size=config.hidden_size,
                    intermediate_size=config.intermediate_size,
                    custom_routing_function=Llama4MoE.custom_routing_function,
                    apply_router_weight_on_input=True,
                )
        """
    site = only(code, f"{MODELS}/llama4.py")
    assert site.kwargs["custom_routing_function"] == "Llama4MoE.custom_routing_function"
    assert site.kwargs["top_k"] == 1


def test_branches_that_disagree_are_assumed() -> None:
    code = """
        from vllm.model_executor.layers.fused_moe import FusedMoE
        class Block:
            def __init__(self, config, flag):
                if flag:
                    self.shared = Mlp()
                    act = "gelu"
                else:
                    self.shared = Mlp()
                    act = "silu"
                self.experts = FusedMoE(
                    num_experts=config.num_experts,
                    top_k=config.num_experts_per_tok,
                    hidden_size=config.hidden_size,
                    intermediate_size=config.moe_intermediate_size,
                    activation=act,
                    shared_experts=self.shared,
                )
        """
    site = only(code, f"{MODELS}/qwen2_moe.py")
    assert site.assumed == ("activation",)
    assert site.kwargs["activation"] == "silu"  # the generic fallback
    assert site.kwargs["shared_experts"] == PRESENT  # both branches build one
    assert any(n.startswith("activation: `act` differs") for n in site.notes)


def test_unresolved_arguments_get_documented_fallbacks() -> None:
    code = """
        from vllm.model_executor.layers.fused_moe import FusedMoE
        def build(sizes, mystery):
            return FusedMoE(
                num_experts=sizes.experts,
                top_k=compute_top_k(),
                hidden_size=64,
                intermediate_size=f"{mystery}",
                shared_experts=mystery.shared,
                **extra,
            )
        """
    site = only(code, "plugin/models/unknown_model.py")
    assert site.model == configs.DEFAULT_KEY
    assert site.assumed == ("num_experts", "top_k", "intermediate_size", "shared_experts")
    fallbacks = configs.load_configs()[configs.DEFAULT_KEY].fallbacks
    for name in site.assumed:
        assert site.kwargs[name] == fallbacks[name]
    assert site.kwargs["hidden_size"] == 64
    assert "`**extra` is not analysed" in site.notes
    assert any(n.startswith("top_k: resolves to compute_top_k(...), not int") for n in site.notes)


def test_missing_required_arguments_are_assumed() -> None:
    code = """
        from vllm.model_executor.layers.fused_moe import FusedMoE
        x = FusedMoE(hidden_size=32)
        """
    site = only(code, f"{MODELS}/mixtral.py")
    assert site.assumed == ("num_experts", "top_k", "intermediate_size")
    assert (site.kwargs["num_experts"], site.kwargs["top_k"]) == (8, 2)


def test_parameters_followed_to_the_class_callers() -> None:
    code = """
        from vllm.model_executor.layers.fused_moe import FusedMoE

        class MixtralMoE:
            def __init__(self, num_experts, top_k, hidden_size, intermediate_size,
                         params_dtype=None, renormalize: bool = True):
                self.experts = FusedMoE(num_experts, top_k, hidden_size, intermediate_size,
                                        params_dtype=params_dtype, renormalize=renormalize)

        class MixtralDecoderLayer:
            def __init__(self, config):
                self.block_sparse_moe = MixtralMoE(
                    config.num_local_experts,
                    config.num_experts_per_tok,
                    hidden_size=config.hidden_size,
                    intermediate_size=config.intermediate_size,
                )
        """
    site = only(code, f"{MODELS}/mixtral.py")
    assert site.positional == 4
    assert site.assumed == ()
    assert site.kwargs == {
        "num_experts": 8,
        "top_k": 2,
        "hidden_size": 64,
        "intermediate_size": 32,
        "renormalize": True,
    }


def test_parameter_default_without_caller_is_assumed_with_its_value() -> None:
    code = """
        from vllm.model_executor.layers.fused_moe import FusedMoE
        class Block:
            def __init__(self, config, renormalize: bool = False):
                self.experts = FusedMoE(num_experts=config.num_experts, top_k=2,
                                        hidden_size=64, intermediate_size=32,
                                        renormalize=renormalize)
        """
    site = only(code, f"{MODELS}/olmoe.py")
    assert site.kwargs["renormalize"] is False
    assert site.assumed == ("renormalize",)
    assert "renormalize: `renormalize` taken from its default in `__init__`" in site.notes


def test_default_contradicted_by_the_branch_holding_the_call() -> None:
    code = """
        from vllm.model_executor.layers.fused_moe import FusedMoE
        class Layer:
            def __init__(self, config, expert_num: int = 1):
                if expert_num == 1:
                    self.mlp = Mlp()
                else:
                    self.moe = FusedMoE(num_experts=expert_num, top_k=2,
                                        hidden_size=64, intermediate_size=32)
        """
    site = only(code, f"{MODELS}/minimax_text_01.py")
    assert site.assumed == ("num_experts",)
    assert site.kwargs["num_experts"] == 16  # minimax_text_01's fallback, not the default 1


def test_module_helper_functions_are_followed() -> None:
    code = """
        from vllm.model_executor.layers.fused_moe import FusedMoE

        def _num_experts(config) -> int:
            return getattr(config, "num_experts", getattr(config, "num_local_experts", 8))

        def _renormalize(config) -> bool:
            explicit = getattr(config, "moe_renormalize", None)
            if explicit is not None:
                return bool(explicit)
            return not getattr(config, "residual_moe", False)

        class Grok1MoE:
            def __init__(self, config):
                self.experts = FusedMoE(num_experts=_num_experts(config),
                                        top_k=config.num_experts_per_tok,
                                        hidden_size=config.hidden_size,
                                        intermediate_size=config.intermediate_size,
                                        renormalize=_renormalize(config))
        """
    site = only(code, f"{MODELS}/grok1.py")
    assert site.assumed == ()
    assert site.kwargs["num_experts"] == 8
    assert site.kwargs["renormalize"] is True


def test_unknown_kwargs_and_parallel_arguments_stay_out_of_the_config() -> None:
    code = """
        from vllm.model_executor.layers.fused_moe import FusedMoE
        x = FusedMoE(num_experts=4, top_k=2, hidden_size=8, intermediate_size=4,
                     tp_size=2, prefix="x", use_overlapped=True)
        """
    site = only(code, f"{MODELS}/mixtral.py")
    assert set(site.kwargs) == {"num_experts", "top_k", "hidden_size", "intermediate_size"}
    assert [k.name for k in site.keywords][-1] == "use_overlapped"


def test_assumed_top_k_is_capped_at_the_experts() -> None:
    code = """
        from vllm.model_executor.layers.fused_moe import FusedMoE
        x = FusedMoE(num_experts=4, top_k=unknown, hidden_size=8, intermediate_size=4)
        """
    site = only(code, f"{MODELS}/qwen3_moe.py")  # its fallback top_k is 8
    assert site.kwargs["top_k"] == 4
    assert "top_k: capped at num_experts=4" in site.notes


def test_sites_pickle_and_hash() -> None:
    site = only(DEEPSEEK)
    assert pickle.loads(pickle.dumps(site)) == site
    assert len({site, site}) == 1


def test_analysis_never_imports_torch() -> None:
    code = (
        "import sys, moe_migrate.smoke.signature, moe_migrate.smoke.harness;"
        "print(sorted({'torch', 'triton'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


# --------------------------------------------------------------------------------------------
# The packaged configs
# --------------------------------------------------------------------------------------------

TOP_K = ("num_experts_per_tok", "moe_k", "moe_top_k", "moe_topk", "top_k_experts",
         "num_experts_per_token")
EXPERTS = ("n_routed_experts", "num_experts", "num_local_experts", "moe_num_experts")


@pytest.mark.parametrize("key", sorted(configs.load_configs()))
def test_config_is_small_and_consistent(key: str) -> None:
    tiny = configs.load_configs()[key]
    assert tiny.key == key and tiny.mirrors
    assert set(SEMANTIC) <= set(tiny.fallbacks)
    values = tiny.values
    experts = [values[n] for n in EXPERTS if n in values]
    top_k = [values[n] for n in TOP_K if n in values]
    assert experts and top_k
    for count in experts:
        for per_set in count if isinstance(count, list) else [count]:
            assert 4 <= per_set <= 32
            assert max(top_k) <= per_set
            assert tiny.fallbacks["top_k"] <= tiny.fallbacks["num_experts"]
    if values.get("n_group", 1) > 1:
        assert min(experts) % values["n_group"] == 0
    assert values["hidden_size"] <= 128


def test_config_lookup_by_stem_alias_class_and_default() -> None:
    assert configs.config_for("a/b/qwen3_moe.py", None).key == "qwen3_moe"
    assert configs.config_for("vllm_ascend/models/deepseek_v3.py", None).key == "deepseek_v2"
    assert configs.config_for("fork/my_model.py", "DeepseekV2MoE").key == "deepseek_v2"
    assert configs.config_for("fork/my_model.py", "Nothing").key == configs.DEFAULT_KEY


def test_every_vllm_model_with_a_site_has_a_config() -> None:
    folder = Path(configs.__file__).parent
    names = {p.stem for p in folder.glob("*.json")}
    assert len(names) == len(configs.load_configs())


VLLM = Path(os.environ.get("MOE_MIGRATE_VLLM_SRC", "/tmp/vllm-src"))


@pytest.mark.vllm
@pytest.mark.skipif(not (VLLM / "vllm").is_dir(), reason="no vLLM sources (MOE_MIGRATE_VLLM_SRC)")
def test_vllm_tree_sites_resolve() -> None:
    sources = {}
    for path in (VLLM / "vllm").rglob("*.py"):
        data = path.read_bytes()
        if b"FusedMoE" in data:
            data = data.replace(
                b"fused_moe.shared_fused_moe import SharedFusedMoE", b"fused_moe import FusedMoE"
            ).replace(b"SharedFusedMoE", b"FusedMoE")
            sources[path.relative_to(VLLM).as_posix()] = data
    sites = find_sites(sources)
    assert len(sites) >= 30
    assert all(s.model != configs.DEFAULT_KEY for s in sites)
    assumed = sum(len(s.assumed) for s in sites)
    assert assumed <= 5, [(s.path, s.assumed) for s in sites if s.assumed]
