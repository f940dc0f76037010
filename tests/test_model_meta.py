"""Wan2.1-I2V-14B on the meta device: exact LoRA sizes with no weights allocated."""

from __future__ import annotations

import torch

from rank_sweep.model.adapters import analytic_lora_params
from rank_sweep.model.blocks import WAN_BLOCK_LINEARS
from rank_sweep.model.meta import WAN_I2V_14B_CONFIG, build_transformer_meta, lora_param_table


def test_14b_lora_counts_on_meta_device() -> None:
    model = build_transformer_meta(WAN_I2V_14B_CONFIG)
    assert all(p.device.type == "meta" for p in model.parameters())
    assert model.blocks[0].attn1.to_q.weight.shape == (5120, 5120)
    table = lora_param_table(WAN_I2V_14B_CONFIG, [4, 128], list(WAN_BLOCK_LINEARS))
    assert table == {4: 22_446_080, 128: 718_274_560}
    for r, n in table.items():
        assert (
            n
            == r * 5_611_520
            == analytic_lora_params(WAN_I2V_14B_CONFIG, r, list(WAN_BLOCK_LINEARS))
        )


def test_lora_injection_stays_on_meta() -> None:
    from peft import LoraConfig, inject_adapter_in_model

    model = build_transformer_meta(WAN_I2V_14B_CONFIG)
    inject_adapter_in_model(
        LoraConfig(r=8, target_modules=r"^blocks\.\d+\.ffn\.net\.2$"), model, low_cpu_mem_usage=True
    )
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    assert len(lora) == 80 and all(p.device == torch.device("meta") for p in lora)


def test_count_params_cli(capsys) -> None:
    from rank_sweep.model.__main__ import main

    assert main(["count-params", "--ranks", "4,128"]) == 0
    out = capsys.readouterr().out
    assert "22,446,080" in out and "718,274,560" in out and "4.381%" in out
    for name in ("Wan2.1-I2V-14B", "Wan2.2-I2V-A14B", "Wan2.2-TI2V-5B"):
        assert name in out


def test_count_params_covers_the_three_models(capsys) -> None:
    from rank_sweep.model.__main__ import main
    from rank_sweep.model.adapters import analytic_lora_params
    from rank_sweep.model.meta import WAN22_I2V_A14B_CONFIG, WAN22_TI2V_5B_CONFIG

    assert main(["count-params", "--ranks", "32"]) == 0
    out = capsys.readouterr().out
    # Wan2.1 I2V-14B r=32: 179,568,640 params = 359.1 MB in bf16 (published files ~359 MB)
    assert "179,568,640" in out and "359.1" in out and "16,394,878,784" in out
    every = list(WAN_BLOCK_LINEARS)  # the image-branch names are dropped for Wan2.2
    a14b = analytic_lora_params(WAN22_I2V_A14B_CONFIG, 32, every)
    ti2v = analytic_lora_params(WAN22_TI2V_5B_CONFIG, 32, every)
    assert a14b == 32 * 40 * (8 * 2 * 5120 + 2 * (5120 + 13824))  # no add_k/add_v
    assert f"{a14b:,}" in out and f"{2 * a14b:,}" in out and f"{ti2v:,}" in out
