"""How much of the image does one token see after each stage, per ramp and image size?

For a ramp to matter, the conv-only path (pure conv, all C_l = 0) must fail to connect parts of the
image that attention connects. This measures it on the real model: the gradient of the centre
token's features after each stage with respect to the input pixels is exactly zero outside that
token's receptive field (convolutions are zero-padded), so the share of pixels with a non-zero
gradient is the share of the image the token can see. Random weights, eval mode, one image; the
answer depends only on the architecture, the ramp and the image size.

    python benchmarks/receptive_field.py                      # nano at 64, 128 and 224 px
    python benchmarks/receptive_field.py --variant small --sizes 224
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibrate_synthetic import ramps  # noqa: E402  (the ramps the calibration compares)
from rampsearch.architecture import Architecture  # noqa: E402
from rampsearch.models import build_iformer  # noqa: E402


def seen_share(model: torch.nn.Module, img_size: int) -> list[float]:
    """Per stage: share of input pixels that reach the centre token of that stage's output."""
    torch.manual_seed(0)
    image = torch.randn(1, 3, img_size, img_size, requires_grad=True)
    outputs = []  # each stage's channels-last output, caught on the way through one forward pass
    stages = [getattr(model, f"blocks{i + 1}") for i in range(len(model.architecture.depths))]
    hooks = [stage.register_forward_hook(lambda _m, _i, out: outputs.append(out)) for stage in stages]
    model(image)
    for hook in hooks:
        hook.remove()
    shares = []
    for x in outputs:
        h, w = x.shape[1] // 2, x.shape[2] // 2
        # a random projection of the token: a plain sum could cancel by chance
        (grad,) = torch.autograd.grad((x[0, h, w] * torch.randn(x.shape[-1])).sum(), image, retain_graph=True)
        shares.append((grad.abs().sum(1) > 0).float().mean().item() * 100)
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="nano")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 224])
    args = parser.parse_args()
    arch = Architecture.resolve(args.variant)
    stages = " | ".join(f"stage {i + 1}" for i in range(len(arch.depths)))
    print(f"{args.variant}: % of the image seen by the centre token after each stage\n")
    print(f"| ramp | img px | {stages} |")
    print("|---|---:|" + "---:|" * len(arch.depths))
    for name, ramp in ramps(arch).items():
        for size in args.sizes:
            model = build_iformer(args.variant, ramp=ramp, img_size=size, num_classes=0).eval()
            print(f"| {name} | {size} | " + " | ".join(f"{s:.0f}" for s in seen_share(model, size)) + " |")


if __name__ == "__main__":
    main()
