"""Spectral analysis of feature maps, in the spirit of the paper's Fourier analysis.

For every block, the 2-D Fourier transform of its output feature maps (per channel, over H x W)
gives an amplitude per spatial frequency. Averaged over images and channels, the log amplitude
along the diagonal from frequency 0 to the highest frequency (pi) says how much high- versus
low-frequency energy the block keeps; "relative" means minus the log amplitude at frequency 0.
A ramp that gives early blocks more high-frequency channels should keep more energy at pi there.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


def relative_log_amplitude(features: torch.Tensor) -> np.ndarray:
    """(B, H, W, C) features → relative log amplitude at the frequencies 0..pi along the diagonal."""
    x = features.permute(0, 3, 1, 2).float()
    spectrum = torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1)).abs()  # frequency 0 at the centre
    log_amp = torch.log(spectrum + 1e-8).mean(dim=(0, 1))  # average over images and channels
    h, w = log_amp.shape
    steps = torch.arange(min(h, w) // 2 + 1)
    diagonal = log_amp[h // 2 - steps, w // 2 - steps]  # from the centre (0) to the corner (pi)
    return (diagonal - diagonal[0]).numpy()


@torch.no_grad()
def block_spectra(model: nn.Module, images: torch.Tensor) -> list[np.ndarray]:
    """Relative log amplitude (0..pi) of every Block's output, in block order."""
    from ..models.inception_transformer import Block

    outputs: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: outputs.append(out.detach()))
             for m in model.modules() if isinstance(m, Block)]
    was_training = model.training
    model.eval()
    try:
        model(images)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return [relative_log_amplitude(out) for out in outputs]


def high_frequency_profile(model: nn.Module, images: torch.Tensor) -> list[float]:
    """Per block, the relative log amplitude at the highest frequency (pi): higher keeps more detail."""
    return [float(curve[-1]) for curve in block_spectra(model, images)]
