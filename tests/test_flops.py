"""The closed-form FLOPs model equals fvcore's count on any architecture and ramp."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rampsearch import Architecture, RampSchedule, build_iformer, count_flops, estimate_flops
from rampsearch.flops import flops_model


@st.composite
def architectures_and_ramps(draw):
    depths = tuple(draw(st.integers(1, 2)) for _ in range(4))
    units = tuple(draw(st.integers(1, 4)) for _ in range(4))
    head_dim = draw(st.sampled_from([16, 32]))
    arch = Architecture(depths, tuple(u * head_dim for u in units), head_dim=head_dim,
                        mlp_ratio=draw(st.sampled_from([2.0, 3.0, 4.0])),
                        pool_sizes=tuple(draw(st.integers(1, 3)) for _ in range(4)))
    heads = [draw(st.integers(0, w // head_dim)) for w in arch.block_widths]
    size = (draw(st.integers(32, 80)), draw(st.integers(32, 80)))
    return arch, RampSchedule.from_high_heads(arch, heads), size, draw(st.integers(0, 20))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(architectures_and_ramps())
def test_estimate_equals_fvcore(case):
    arch, ramp, size, num_classes = case
    model = build_iformer(depths=arch.depths, embed_dims=arch.embed_dims, ramp=ramp, head_dim=arch.head_dim,
                          mlp_ratio=arch.mlp_ratio, pool_sizes=arch.pool_sizes, img_size=size,
                          num_classes=num_classes)
    estimate = estimate_flops(depths=arch.depths, embed_dims=arch.embed_dims, ramp=ramp, head_dim=arch.head_dim,
                              mlp_ratio=arch.mlp_ratio, pool_sizes=arch.pool_sizes, img_size=size,
                              num_classes=num_classes)
    assert estimate == count_flops(model, size)
    params = flops_model(arch, size, num_classes).params_of_heads(ramp.high_heads(arch))
    assert params == sum(p.numel() for p in model.parameters())


def test_ramp_range_of_small_matches_reference():
    model = flops_model(Architecture.resolve("small"))
    # All blocks one attention head .. all blocks one high head: the ramp alone spans ~4.63-4.99 G.
    arch = model.arch
    one_attention_head = [w // 32 - 1 for w in arch.block_widths]
    assert round(model.of_heads(one_attention_head) / 1e9, 3) == 4.627
    assert round(model.of_heads([1] * 18) / 1e9, 3) == 4.992
    assert model.min < 4.627e9 and model.max > 4.992e9  # pure-branch blocks widen the range


def test_closed_form_params_of_official_variants():
    for name, params in (("small", 19_866_344), ("base", 47_866_216), ("large", 86_637_096)):
        arch = Architecture.resolve(name)
        assert flops_model(arch).params_of_heads(RampSchedule.handset(arch).high_heads(arch)) == params


def test_vectorised_equals_scalar():
    model = flops_model(Architecture.resolve("base"))
    rng = np.random.default_rng(0)
    heads = np.stack([rng.integers(0, np.array(model.arch.block_widths) // 32 + 1) for _ in range(50)])
    assert list(model.of_many(heads)) == [model.of_heads(row) for row in heads]
