"""Beyond the official model: pure-branch blocks, any input size, fused attention numerics."""
from __future__ import annotations

import pytest
import torch

from rampsearch import build_iformer, set_fused_attn

TINY = dict(depths=(1, 1, 2, 1), embed_dims=(64, 64, 96, 128), num_classes=7)


def _forward_backward(model, h, w):
    x = torch.randn(2, 3, h, w, requires_grad=True)
    out = model(x)
    out.sum().backward()
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("ratio", [0.0, 1.0])
def test_pure_branch_blocks(ratio):
    model = build_iformer(**TINY, ramp=[ratio] * 5, img_size=64)
    mixers = [block.attn for stage in (model.blocks1, model.blocks3) for block in stage]
    assert all((m.high_mixer is None) == (ratio == 0.0) for m in mixers)
    assert all((m.low_mixer is None) == (ratio == 1.0) for m in mixers)
    _forward_backward(model, 64, 64)


def test_mixed_pure_and_split_blocks():
    model = build_iformer(**TINY, ramp=[1.0, 0.5, 2 / 3, 0.0, 0.25], img_size=64)
    _forward_backward(model, 64, 64)


@pytest.mark.parametrize("h,w", [(224, 192), (232, 232), (71, 97)])
def test_non_square_and_odd_sizes(h, w):
    # The official model crashes on 224x192 (square reshape) and 232x232 (pool/upsample round trip).
    model = build_iformer(**TINY, img_size=224)
    _forward_backward(model, h, w)


def test_position_embeddings_interpolate_to_other_sizes():
    model = build_iformer(**TINY, img_size=64).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 96, 128)).shape == (1, 7)
    assert model.pos_embed1.shape == (1, 16, 16, 64)


def test_fused_attention_equals_explicit_matmul():
    torch.manual_seed(0)
    model = build_iformer(**TINY, img_size=64).eval()
    for p in model.parameters():  # move away from the near-identity init so attention matters
        p.data.normal_(0, 0.1)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        set_fused_attn(model, True)
        fused = model(x)
        set_fused_attn(model, False)
        explicit = model(x)
    assert torch.allclose(fused, explicit, atol=1e-5, rtol=0)


def test_layer_scale_only_in_stages_3_and_4():
    model = build_iformer(**TINY, img_size=64)
    assert model.blocks1[0].layer_scale_1 is None and model.blocks2[0].layer_scale_2 is None
    assert model.blocks3[0].layer_scale_1.shape == (96,)
    assert torch.all(model.blocks4[0].layer_scale_2 == 1e-6)


def test_drop_path_schedule():
    model = build_iformer(**TINY, img_size=64, drop_path_rate=0.4)
    assert model.blocks1[0].drop_path.__class__.__name__ == "Identity"
    assert model.blocks4[0].drop_path.drop_prob == pytest.approx(0.4)
