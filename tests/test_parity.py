"""The builder with the hand-set ramp IS the official iFormer: keys, shapes, params, FLOPs."""
from __future__ import annotations

import pytest
import timm
import torch

import rampsearch
from rampsearch import build_iformer, count_flops, estimate_flops, flop_report

OFFICIAL = {  # (variant, img_size): (params, fvcore FLOPs) from the reference measurements
    ("small", 224): (19_866_344, 4_848_476_928),
    ("base", 224): (47_866_216, 9_378_356_224),
    ("large", 224): (86_637_096, 14_046_903_168),
    ("small", 384): (20_899_944, 16_097_814_528),
    ("base", 384): (48_936_296, None),
    ("large", 384): (87_743_656, None),
}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("variant,img_size", list(OFFICIAL))
def test_params_and_flops_match_official(variant, img_size):
    params, flops = OFFICIAL[(variant, img_size)]
    with torch.device("meta"):  # shapes only: no memory, no init
        assert n_params(build_iformer(variant, img_size=img_size)) == params
    if flops is not None:
        assert estimate_flops(variant, img_size=img_size) == flops
        assert count_flops(build_iformer(variant, img_size=img_size), img_size) == flops


def _read_listing(path):
    rows = [line.rstrip("\n").split("\t") for line in path.read_text().splitlines()[1:] if line.strip()]
    return {key: () if shape == "scalar" else tuple(int(d) for d in shape.split("x")) for key, shape in rows}


@pytest.mark.parametrize("variant", ["small", "base", "large"])
def test_state_dict_matches_official_checkpoint(variant, reference_dir):
    official = _read_listing(reference_dir / f"iformer_{variant}_checkpoint_keys.tsv")
    with torch.device("meta"):
        model = build_iformer(variant)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert set(ours) == set(official)
    assert ours == official
    # A checkpoint with exactly those keys and shapes loads strictly.
    fake = {k: torch.empty(shape, device="meta") for k, shape in official.items()}
    model.load_state_dict(fake, strict=True, assign=True)


def test_unsupported_ops_exposed_and_attention_counted():
    report = flop_report(build_iformer("small"), 224)
    # fvcore skips these (reference §4b); attention matmuls must not be among them.
    assert report.unsupported == {"aten::gelu": 55, "aten::add": 58, "aten::mul": 42,
                                  "aten::max_pool2d": 18, "aten::avg_pool2d": 6, "aten::mean": 1}
    # Σ over blocks of 2·tokens²·C_l: the reference's 0.3247 G of attention matmuls
    assert report.by_operator["scaled_dot_product_attention"] == 324_692_032


def test_fused_and_explicit_attention_count_the_same():
    model = build_iformer("small")
    fused = count_flops(model)
    rampsearch.set_fused_attn(model, False)
    assert count_flops(model) == fused


def test_paper_style_rule_reproduces_handset_lists():
    from rampsearch.architecture import VARIANTS, Architecture

    for name in ("small", "base", "large"):
        arch = Architecture.resolve(name)
        units = [w // 32 for w in arch.block_widths]
        low = [u - k for u, k in zip(units, rampsearch.paper_style_high_heads(arch))]
        assert tuple(low) == VARIANTS[name].handset_low_heads


def test_handset_ramp_per_stage_small():
    from rampsearch.architecture import Architecture

    arch = Architecture.resolve("small")
    ramp = rampsearch.RampSchedule.handset(arch)
    assert ramp.channels(arch)[:3] == [(64, 32)] * 3
    assert ramp.channels(arch)[6] == (96, 224) and ramp.channels(arch)[10] == (32, 288)
    assert ramp.per_stage(arch)[3] == [32 / 384] * 3


@pytest.mark.parametrize("name,img,crop_pct", [("inception_transformer_small", 224, 0.9),
                                               ("inception_transformer_small_384", 384, 1.0),  # the official 384 eval
                                               ("inception_transformer_nano", 64, 0.9)])
def test_timm_registry(name, img, crop_pct):
    model = timm.create_model(name)
    assert model.img_size == (img, img)
    config = timm.data.resolve_model_data_config(model)
    assert config["crop_pct"] == crop_pct and config["input_size"] == (3, img, img)


def test_timm_create_model_takes_a_ramp():
    arch = rampsearch.Architecture.resolve("small")
    ramp = [0.5 if w < 320 else 32 * 2 / w for w in arch.block_widths]
    ramp[0:3] = [2 / 3] * 3
    model = timm.create_model("inception_transformer_small", ramp=ramp, num_classes=10)
    assert [m.attn.high_dim for m in model.blocks4] == [64, 64, 64]
    assert model.head.out_features == 10


def test_timm_names_do_not_shadow_mobile_iformer():
    assert "iformer_s" not in timm.list_models("inception_transformer*")
    assert len(timm.list_models("inception_transformer_*")) == 7


def test_nano_is_a_cpu_proxy():
    model = build_iformer("nano", img_size=64)
    assert 1e6 <= n_params(model) <= 5e6
    assert estimate_flops("nano", img_size=64) <= 100e6
