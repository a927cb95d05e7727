"""The GPU memory budget per deployment target: its arithmetic, and that it uses what is configured."""

from __future__ import annotations

from pathlib import Path

import yaml

from servers import gpu_budget
from servers.gpu_budget import COMPOSE_CTX, COMPOSE_QUANT, COMPOSE_SLOTS, LLMShape, Target, configured, render
from servers.model_fetch import parse_args as fetch_args

ROOT = Path(__file__).resolve().parent.parent


def test_model_shape_arithmetic():
    """KV: 6 attention layers x K,V x 2 heads x 128 x f16; Mamba-2 state ~50 MB per slot."""
    assert gpu_budget.KV_BYTES_PER_TOKEN == 6144
    assert 45e6 < gpu_budget.RECURRENT_BYTES_PER_SLOT < 55e6
    one, four = LLMShape("Q4_K_M", 8192, 1), LLMShape("Q4_K_M", 8192, 4)
    kv_and_state = lambda shape: dict(shape.items())[f"LLM KV + Mamba state ({shape.slots} x 8192 tokens)"]  # noqa: E731
    assert abs(kv_and_state(one) - (8192 * 6144 + gpu_budget.RECURRENT_BYTES_PER_SLOT) / 1e9) < 1e-9
    assert abs(kv_and_state(four) - 4 * kv_and_state(one)) < 1e-9


def test_every_configured_target_fits_with_headroom():
    for target in configured():
        assert target.used_gb == sum(gb for _, gb in target.items())
        assert target.fits, f"{target.name}: {target.used_gb:.1f} of {target.capacity_gb:.1f} GB"


def test_the_larger_quantization_would_not_fit_a_5090():
    """Why the compose default is IQ4_XS: Q4_K_M beside ASR and TTS leaves a 32 GB card no headroom."""
    five090 = next(t for t in configured() if t.name.startswith("RTX 5090"))
    bigger = Target(five090.name, five090.capacity_gb, "all", LLMShape("Q4_K_M", COMPOSE_CTX, COMPOSE_SLOTS),
                    five090.others)  # fmt: skip
    assert five090.fits and not bigger.fits


def test_budget_uses_the_configured_llm(monkeypatch):
    """Compose's llama-server flags, the fetch step's default quantization and Modal's LLM agree with
    the shapes the budget computes."""
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())["services"]["llm-gpu"]["command"]
    assert compose[compose.index("--ctx-size") + 1] == str(COMPOSE_CTX)
    assert compose[compose.index("--parallel") + 1] == str(COMPOSE_SLOTS)
    assert fetch_args([]).llm_quant == COMPOSE_QUANT

    monkeypatch.setenv("MODAL_PROXY_KEY", "test")  # modal_app stops a deploy without them
    monkeypatch.setenv("MODAL_PROXY_SECRET", "test")
    import modal_app

    llm = modal_app.llm_command()
    assert llm[llm.index("--parallel") + 1] == str(gpu_budget.MODAL_SLOTS)
    assert llm[llm.index("--ctx-size") + 1] == str(gpu_budget.MODAL_CTX_PER_SLOT * gpu_budget.MODAL_SLOTS)
    fetch = modal_app.fetch_command("llm")
    assert fetch[fetch.index("--llm-quant") + 1] == gpu_budget.MODAL_QUANT


def test_the_deploy_docs_carry_the_table():
    assert render(configured()) in (ROOT / "docs" / "deploy-docker.md").read_text()
