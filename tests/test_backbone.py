"""Both families as timm backbones: what timm's tests/test_models.py asks of every model, and weight loading.

iFormer-S runs at 64-96 px (224 px for its default-cfg shapes, 384 px for the 224 → 384 checkpoint),
nano at 64-128 px, T2T-ViT_t-7 at 64 px.
"""
from __future__ import annotations

import json

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models import FeatureInfo, create_feature_extractor, get_graph_node_names, group_parameters
from timm.optim import create_optimizer_v2, param_groups_layer_decay
from torch import nn

from rampsearch import build_iformer
from rampsearch.models import build_t2t_vit, checkpoint_filter_fn
from rampsearch.models.inception_transformer import resample_pos_embed, stage_sizes

SMALL, NANO, T2T = "inception_transformer_small", "inception_transformer_nano", "t2t_vit_t_7"
IFORMERS = (SMALL, NANO)
BACKBONES = (SMALL, NANO, T2T)
INPUT = {SMALL: 96, NANO: 64, T2T: 64}  # small inputs: these run on one CPU thread
BUILD = {SMALL: {}, NANO: {}, T2T: {"img_size": 64}}
POS_EMBEDS = {f"pos_embed{i}" for i in range(1, 5)}
REQUIRED_CFG = ("input_size", "num_classes", "crop_pct", "interpolation", "mean", "std", "first_conv",
                "classifier", "architecture", "paper_ids")


@pytest.fixture(autouse=True)
def _one_thread(_deterministic):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # shared cores: a second thread only contends
    yield
    torch.set_num_threads(threads)


def _create(name: str, **kwargs) -> nn.Module:
    return timm.create_model(name, **{**BUILD[name], **kwargs})


def _image(name: str, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, INPUT[name], INPUT[name])


def _spatial(x: torch.Tensor, output_fmt: str) -> tuple[int, ...]:
    return tuple(x.shape[1:3] if output_fmt == "NHWC" else x.shape[2:4])


# -- what timm's tests/test_models.py checks for every model --------------------------------------------------

@pytest.mark.parametrize("name,sizes", [(SMALL, [(64, 64), (96, 96)]), (NANO, [(64, 64), (96, 128), (71, 97)]),
                                        (T2T, [(64, 64), (80, 96)])])
def test_forward_backward_at_several_sizes(name, sizes):
    model = _create(name, num_classes=42).train()
    for h, w in sizes:
        model.zero_grad()
        out = model(torch.randn(2, 3, h, w))
        out.mean().backward()
        assert out.shape == (2, 42) and torch.isfinite(out).all()
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing, f"no gradient at {h}x{w} for {missing}"


@pytest.mark.parametrize("name", timm.list_models("inception_transformer_*") + timm.list_models("t2t_vit_t_*"))
def test_default_cfg_is_complete_and_names_real_modules(name):
    with torch.device("meta"):
        model = timm.create_model(name)
    cfg = model.pretrained_cfg
    assert all(cfg.get(key) is not None for key in REQUIRED_CFG), [k for k in REQUIRED_CFG if cfg.get(k) is None]
    assert cfg["architecture"] == name and cfg["num_classes"] == model.num_classes == 1000
    assert cfg["input_size"] == (3, *model.img_size) and not cfg["fixed_input_size"]
    assert cfg["interpolation"] == "bicubic" and len(cfg["mean"]) == len(cfg["std"]) == 3
    assert cfg["crop_pct"] == (1.0 if name.endswith("_384") else 0.9)
    assert not any(cfg.get(key) for key in ("url", "hf_hub_id", "file")), "nothing is hosted"
    state = model.state_dict()
    assert cfg["first_conv"] + ".weight" in state and cfg["classifier"] + ".weight" in state
    if name.startswith("inception_transformer"):
        assert model.img_size[0] == {"nano": 64, "384": 384}.get(name.rsplit("_", 1)[-1], 224)
        assert cfg["pool_size"] == stage_sizes(model.img_size)[-1]
        assert isinstance(model.get_submodule(cfg["first_conv"]), nn.Conv2d)


@pytest.mark.parametrize("name", IFORMERS)
def test_default_cfg_shapes(name):
    model = timm.create_model(name).eval()
    cfg = model.pretrained_cfg
    x = torch.randn(1, *cfg["input_size"])
    with torch.no_grad():
        assert _spatial(model.forward_features(x), model.output_fmt) == cfg["pool_size"]
        model.reset_classifier(0)
        assert model(x).shape == (1, model.num_features)
        model.reset_classifier(0, "")  # no pooling: forward gives the (channels-last) map
        assert model(x).ndim == 4 and _spatial(model(x), model.output_fmt) == cfg["pool_size"]
        headless = timm.create_model(name, num_classes=0, global_pool="").eval()
        assert _spatial(headless(x), headless.output_fmt) == cfg["pool_size"]


def test_default_cfg_shapes_t2t():  # timm's checks for ViT-like (token) models
    model = _create(T2T).eval()
    x = _image(T2T, batch=1)
    with torch.no_grad():
        assert model.forward_features(x).shape == (1, 1 + 4 * 4, model.num_features)
        model.reset_classifier(0)
        assert model(x).shape == (1, model.num_features)
        assert _create(T2T, num_classes=0).eval()(x).shape == (1, model.num_features)


@pytest.mark.parametrize("name", BACKBONES)
def test_features_only_matches_feature_info(name):
    model = _create(name, features_only=True).eval()
    x = _image(name)
    with torch.no_grad():
        features = model(x)
    assert len(features) == len(model.feature_info.channels()) >= 3
    for feature, channels, reduction in zip(features, model.feature_info.channels(), model.feature_info.reduction()):
        assert feature.shape == (2, channels, INPUT[name] // reduction, INPUT[name] // reduction)
    if name in IFORMERS:
        assert model.feature_info.reduction() == [4, 8, 16, 32]
        assert model.feature_info.module_name() == ["blocks1", "blocks2", "blocks3", "blocks4"]


def test_features_only_out_indices_prunes_later_stages():
    model = _create(NANO, features_only=True, out_indices=(1, 2)).eval()
    assert model.feature_info.channels() == [128, 192] and model.feature_info.reduction() == [8, 16]
    assert not hasattr(model.model, "blocks4") and not hasattr(model.model, "pos_embed4")
    assert [f.shape[1] for f in model(_image(NANO))] == [128, 192]


@pytest.mark.parametrize("name", BACKBONES)
def test_forward_intermediates_match_forward_features(name):
    model = _create(name).eval()
    x = _image(name)
    info = FeatureInfo(model.feature_info, list(range(len(model.feature_info))))
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x), rtol=0, atol=0)
        assert len(intermediates) == len(info.channels())
        for y, channels, reduction in zip(intermediates, info.channels(), info.reduction()):
            assert y.shape == (2, channels, INPUT[name] // reduction, INPUT[name] // reduction)
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        early = model.forward_intermediates(x, indices=[0], stop_early=True, intermediates_only=True)
        normed = model.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)[0]
    torch.testing.assert_close(last_two, intermediates[-2:], rtol=0, atol=0)
    torch.testing.assert_close(early, intermediates[:1], rtol=0, atol=0)
    if name in IFORMERS:  # the final norm belongs to the last stage: norm=True gives forward_features there
        torch.testing.assert_close(normed.permute(0, 2, 3, 1), final, rtol=0, atol=0)
        nhwc = model.forward_intermediates(x, output_fmt="NHWC", intermediates_only=True)
        torch.testing.assert_close([y.permute(0, 3, 1, 2) for y in nhwc], intermediates, rtol=0, atol=0)


def test_prune_intermediate_layers_iformer():
    model = _create(NANO).eval()
    x = _image(NANO)
    with torch.no_grad():
        wanted = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
        assert model.prune_intermediate_layers([0, 1]) == [0, 1]
        assert not any(k.startswith(("patch_embed3", "pos_embed3", "blocks3", "blocks4", "head")) for k in
                       model.state_dict())
        assert isinstance(model.norm, nn.Identity) and isinstance(model.head, nn.Identity)
        assert model.num_features == 128 and model.no_weight_decay() == {"pos_embed1", "pos_embed2"}
        torch.testing.assert_close(model.forward_intermediates(x, indices=[0, 1], intermediates_only=True), wanted)
        out = model(x)  # global pooling went with the head: the last kept stage's map
        torch.testing.assert_close(out.permute(0, 3, 1, 2), wanted[-1])
        torch.testing.assert_close(torch.jit.script(model)(x), out)  # the pruned stages compile away


def test_prune_intermediate_layers_keeps_what_is_asked():
    model = _create(NANO)
    assert model.prune_intermediate_layers(2, prune_head=False) == [2, 3]
    assert isinstance(model.head, nn.Linear) and isinstance(model.norm, nn.LayerNorm)
    t2t = _create(T2T).eval()
    assert t2t.prune_intermediate_layers((1, 3), prune_norm=True) == [1, 3]
    assert len(t2t.blocks) == 4 and isinstance(t2t.norm, nn.Identity) and isinstance(t2t.head, nn.Identity)
    assert t2t(_image(T2T)).shape == (2, 17, 256)  # no pooling: every token


@pytest.mark.parametrize("name", BACKBONES)
def test_reset_classifier(name):
    model = _create(name).eval()
    assert model.get_classifier() is model.head
    model.reset_classifier(10)
    x = _image(name)
    assert model(x).shape == (2, 10) and model.num_classes == 10
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(10, "max")


@pytest.mark.parametrize("name", BACKBONES)
def test_torchscript(name):
    with timm.set_scriptable(True):
        model = _create(name).eval()
    scripted = torch.jit.script(model)
    x = _image(name, batch=1)  # not the model's img_size: the position-embedding resize compiles too
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", BACKBONES)
def test_fx_feature_extraction(name):
    model = _create(name, drop_path_rate=0.0)
    x = _image(name)
    train_nodes, eval_nodes = get_graph_node_names(model)
    assert "head" in eval_nodes and "head" in train_nodes
    extractor = create_feature_extractor(model, ["head"])
    model.eval(), extractor.eval()
    with torch.no_grad():
        torch.testing.assert_close(extractor(x)["head"], model(x))
    extractor.train()  # timm's FX backward check: the traced training graph reaches every parameter
    extractor(x)["head"].mean().backward()
    assert all(p.grad is not None for p in extractor.parameters())


@pytest.mark.parametrize("name", sorted(timm.list_models("inception_transformer_*") + timm.list_models("t2t_vit_*")))
def test_fx_traced_model_scripts(name):
    """timm's test_model_forward_fx_torchscript: trace to the last node, then torch.jit.script the graph."""
    model = timm.create_model(name, num_classes=10, img_size=64).eval()
    _, eval_nodes = get_graph_node_names(model)
    scripted = torch.jit.script(create_feature_extractor(model, [eval_nodes[-1]]).eval())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(next(iter(scripted(x).values())), model(x), rtol=1e-5, atol=1e-5)


def test_plain_torch_fx_traces_too():
    model = _create(NANO).eval()
    x = _image(NANO, batch=1)
    torch.testing.assert_close(torch.fx.symbolic_trace(model)(x), model(x))


def test_fx_feature_class_gives_the_blocks_channels_last_outputs():
    model = _create(NANO).eval()
    graph_net = _create(NANO, features_only=True, feature_cls="fx").eval()
    graph_net.load_state_dict({"graph_module." + k: v for k, v in model.state_dict().items() if "head" not in k
                               and not k.startswith("norm.")}, strict=True)
    x = _image(NANO)
    with torch.no_grad():
        wanted = model.forward_intermediates(x, intermediates_only=True)
        torch.testing.assert_close([y.permute(0, 3, 1, 2) for y in graph_net(x)], wanted)


def test_no_weight_decay_names_the_position_embeddings():
    model = _create(NANO)
    assert model.no_weight_decay() == POS_EMBEDS <= dict(model.named_parameters()).keys()
    optimizer = create_optimizer_v2(model, "adamw", weight_decay=0.05)
    no_decay = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert all(id(getattr(model, n)) in no_decay for n in POS_EMBEDS)
    assert _create(T2T).no_weight_decay() == {"cls_token"}


def test_group_matcher_orders_parameters_by_depth():
    model = _create(NANO)  # depths 2-2-4-2
    layer = group_parameters(model, model.group_matcher(), reverse=True)
    assert layer["patch_embed.proj1.weight"] == layer["pos_embed1"] == 0
    assert [layer[f"blocks{s}.{b}.norm1.weight"] for s, d in enumerate((2, 2, 4, 2), 1) for b in range(d)] == \
        list(range(1, 11))
    assert layer["patch_embed2.proj.weight"] == layer["pos_embed2"] == layer["blocks2.0.norm1.weight"]
    assert layer["norm.weight"] == layer["blocks4.1.norm1.weight"] and layer["head.weight"] == 11
    coarse = group_parameters(model, model.group_matcher(coarse=True), reverse=True)
    assert [coarse[k] for k in ("pos_embed1", "blocks1.1.mlp.fc1.weight", "pos_embed2", "blocks4.0.attn.proj.weight",
                                "head.bias")] == [0, 1, 2, 4, 5]
    groups = param_groups_layer_decay(model, layer_decay=0.5)
    assert len({g["lr_scale"] for g in groups}) == 12
    t2t_layer = group_parameters(_create(T2T), _create(T2T).group_matcher(), reverse=True)
    assert t2t_layer["cls_token"] == 0 and t2t_layer["blocks.6.mlp.fc2.weight"] == t2t_layer["norm.weight"] == 7


def _saved_bytes(model: nn.Module, x: torch.Tensor) -> int:
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).mean().backward()
    return total


@pytest.mark.parametrize("name", (NANO, T2T))
def test_grad_checkpointing_same_gradients_less_memory(name):
    model = _create(name, drop_path_rate=0.2).train()  # drop path: the recomputation must replay the RNG
    x = _image(name)
    grads, saved = [], []
    for enable in (False, True):
        model.set_grad_checkpointing(enable)
        model.zero_grad()
        torch.manual_seed(1)
        saved.append(_saved_bytes(model, x))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert saved[1] < saved[0] / 2
    for n, g in grads[0].items():
        torch.testing.assert_close(grads[1][n], g, rtol=1e-5, atol=1e-6, msg=n)


# -- weights: checkpoint_filter_fn, pretrained=True, save_for_hf ----------------------------------------------

def _trained_like(name: str, **kwargs) -> nn.Module:
    """A model whose weights are all far from their init (so a missed tensor changes the logits)."""
    model = _create(name, **kwargs).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
        for name_, b in model.named_buffers():
            if "running" in name_:
                b.uniform_(0.5, 1.5)
    return model


def _checkpoint_forms(state: dict) -> dict[str, dict]:
    zeros = {k: torch.zeros_like(v) for k, v in state.items()}
    module = {"module." + k: v for k, v in state.items()}
    return {
        "plain": state,
        "ddp": module,
        "model": {"model": state},
        "timm_train_ema": {"epoch": 3, "state_dict": zeros, "state_dict_ema": state, "arch": "x"},
        "deit_ema": {"model": zeros, "model_ema": module},
    }


@pytest.mark.parametrize("form", ["plain", "ddp", "model", "timm_train_ema", "deit_ema"])
def test_checkpoint_filter_unwraps_prefers_ema_and_strips_prefixes(form):
    source = _trained_like(NANO)
    checkpoint = _checkpoint_forms(source.state_dict())[form]
    model = _create(NANO).eval()
    model.load_state_dict(checkpoint_filter_fn(checkpoint, model), strict=True)
    x = _image(NANO)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)


def test_checkpoint_filter_follows_the_official_key_names(reference_dir):
    listing = (reference_dir / "iformer_small_checkpoint_keys.tsv").read_text().splitlines()[1:]
    official = [line.split("\t")[0] for line in listing if line.strip()]
    with torch.device("meta"):
        model = timm.create_model(SMALL)
    state = {"module." + k: v for k, v in model.state_dict().items()}
    assert list(checkpoint_filter_fn({"model": state}, model)) == list(model.state_dict())
    assert sorted(model.state_dict()) == sorted(official)


def test_384_model_loads_224_checkpoint_position_embeddings(tmp_path):
    source = _trained_like(SMALL)  # the official _384 checkpoints hold these 224-px (56/28/14/7) embeddings
    torch.save({"model": source.state_dict()}, tmp_path / "iformer_small_384.pth")
    model = timm.create_model("inception_transformer_small_384", pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(tmp_path / "iformer_small_384.pth"))).eval()
    assert [tuple(getattr(model, f"pos_embed{i}").shape[1:3]) for i in range(1, 5)] == [(96, 96), (48, 48),
                                                                                          (24, 24), (12, 12)]
    expected = resample_pos_embed(source.pos_embed2.detach(), [48, 48])
    torch.testing.assert_close(model.pos_embed2.detach(), expected, rtol=0, atol=0)
    # The 224 model resizes the same way at run time: on a 384 image both give the same logits.
    x = torch.randn(1, 3, 384, 384)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), rtol=1e-5, atol=1e-5)


def test_resample_is_bilinear_channels_last():
    pos = torch.arange(4.0).reshape(1, 2, 2, 1).expand(1, 2, 2, 3)  # values 0 1 / 2 3 in every channel
    resized = resample_pos_embed(pos, [4, 4])
    wanted = F.interpolate(pos.permute(0, 3, 1, 2), size=(4, 4), mode="bilinear", align_corners=False)
    torch.testing.assert_close(resized, wanted.permute(0, 2, 3, 1))
    assert resized[0, :, :, 0].tolist()[0] == [0.0, 0.25, 0.75, 1.0]


@pytest.fixture
def nano_weights(tmp_path):
    source = _trained_like(NANO)
    path = tmp_path / "nano.pth"
    torch.save({"epoch": 1, "state_dict": source.state_dict()}, path)
    return source, str(path)


def test_pretrained_from_a_local_file_and_checkpoint_path(nano_weights):
    source, path = nano_weights
    x = _image(NANO)
    by_cfg = _create(NANO, pretrained=True, pretrained_cfg_overlay=dict(file=path)).eval()
    by_path = _create(NANO, checkpoint_path=path).eval()
    with torch.no_grad():
        torch.testing.assert_close(by_cfg(x), source(x), rtol=0, atol=0)
        torch.testing.assert_close(by_path(x), source(x), rtol=0, atol=0)


def test_pretrained_with_another_head_or_input_channels(nano_weights):
    source, path = nano_weights
    x = _image(NANO)
    ten = _create(NANO, pretrained=True, num_classes=10, pretrained_cfg_overlay=dict(file=path)).eval()
    assert ten.head.out_features == 10  # timm dropped the 1000-class head by the cfg's "classifier"
    gray = _create(NANO, pretrained=True, in_chans=1, pretrained_cfg_overlay=dict(file=path)).eval()
    with torch.no_grad():
        torch.testing.assert_close(ten.forward_features(x), source.forward_features(x), rtol=0, atol=0)
        torch.testing.assert_close(gray.patch_embed.proj1.weight, source.patch_embed.proj1.weight.sum(1, keepdim=True))
    features = _create(NANO, pretrained=True, features_only=True, pretrained_cfg_overlay=dict(file=path)).eval()
    with torch.no_grad():
        torch.testing.assert_close(features(x), source.forward_intermediates(x, intermediates_only=True))


@pytest.mark.parametrize("name", [SMALL, T2T])
def test_pretrained_without_a_source_says_what_to_do(name):
    with pytest.raises(ValueError, match="nothing can be downloaded") as error:
        timm.create_model(name, pretrained=True)
    assert all(hint in str(error.value) for hint in ("pretrained_cfg_overlay=dict(file=", "local-dir:",
                                                     "checkpoint_path="))


RAMP = [0.5, 1.0, 2 / 3, 0.0, 0.25]  # a conv-only and an attention-only block among them
BUILDERS = {
    "build_iformer": lambda: build_iformer(depths=(1, 1, 2, 1), embed_dims=(64, 64, 96, 128), ramp=RAMP,
                                           img_size=64, num_classes=10),
    "create_model": lambda: timm.create_model(NANO, ramp=[1 / 2, 1 / 2, 1 / 4, 3 / 4] + [1 / 6] * 4 + [1.0, 0.0]),
    "t2t": lambda: build_t2t_vit("t_7", embed_dim=128, num_heads=2, img_size=64, num_classes=10),
}


@pytest.mark.parametrize("builder", list(BUILDERS))
def test_save_for_hf_reloads_the_same_model(builder, tmp_path):
    torch.manual_seed(3)
    model = BUILDERS[builder]().eval()
    model.reset_classifier(5)  # a change after construction is exported too
    timm.models.save_for_hf(model, tmp_path, safe_serialization=True)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["num_classes"] == 5 and config["architecture"] == model.pretrained_cfg["architecture"]
    reloaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    assert type(reloaded) is type(model) and reloaded.num_classes == 5
    if builder != "t2t":
        assert config["model_args"]["ramp"] == list(model.ramp.ratios)
        assert reloaded.architecture == model.architecture and reloaded.ramp == model.ramp
    else:
        assert reloaded.config == model.config
    x = torch.randn(2, 3, 64, 64)
    retargeted = timm.create_model(f"local-dir:{tmp_path}", pretrained=True, num_classes=3).eval()
    assert retargeted.num_classes == 3  # timm dropped the exported 5-class head
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), model(x), rtol=0, atol=0)
        torch.testing.assert_close(retargeted.forward_features(x), model.forward_features(x), rtol=0, atol=0)
