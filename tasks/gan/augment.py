"""Differentiable augmentation (DiffAugment) with an adaptive probability (as in ADA): random
colour, translation and cutout transforms are applied to real and generated images alike before the
discriminator, each image with probability p, so a small data set does not let the discriminator
memorise, and gradients still reach the generator. p follows the discriminator's overfitting."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _colour(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    rand = lambda *shape: torch.rand(*shape, generator=generator, device=generator.device).to(x.device)  # noqa: E731
    x = x + (rand(n, 1, 1, 1) - 0.5)  # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (rand(n, 1, 1, 1) * 2) + mean  # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (rand(n, 1, 1, 1) + 0.5) + mean  # contrast


def _translation(x: torch.Tensor, generator: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    n, _, h, w = x.shape
    shift = torch.randint(-int(h * ratio + 0.5), int(h * ratio + 0.5) + 1, (n, 2), generator=generator,
                          device=generator.device).to(x.device).float()
    # A translation as an affine grid with zero padding outside the image.
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = -2.0 * shift[:, 0] / w
    theta[:, 1, 2] = -2.0 * shift[:, 1] / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def _cutout(x: torch.Tensor, generator: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = x.shape
    size_h, size_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    centre_y = torch.randint(0, h + (1 - size_h % 2), (n, 1, 1), generator=generator, device=generator.device).to(x.device)
    centre_x = torch.randint(0, w + (1 - size_w % 2), (n, 1, 1), generator=generator, device=generator.device).to(x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((rows - centre_y + size_h // 2).abs() < (size_h + 1) // 2) & \
             ((cols - centre_x + size_w // 2).abs() < (size_w + 1) // 2)
    return x * (~inside).unsqueeze(1).to(x.dtype)


POLICIES = {"color": _colour, "translation": _translation, "cutout": _cutout}


def diff_augment(x: torch.Tensor, policies: tuple[str, ...], generator: torch.Generator,
                 probability: float = 1.0) -> torch.Tensor:
    """x (N×3×H×W) through each named policy in order, each image with `probability`, with
    randomness from `generator`."""
    if probability <= 0.0:
        return x
    for name in policies:
        augmented = POLICIES[name](x, generator)
        if probability >= 1.0:
            x = augmented
        else:
            chosen = torch.rand(x.shape[0], generator=generator, device=generator.device).to(x.device) < probability
            x = torch.where(chosen[:, None, None, None], augmented, x)
    return x


def adjust_probability(probability: float, real_sign_mean: float, target: float, images: int,
                       speed_images: int) -> float:
    """ADA's controller: raise p when E[sign D(real)] exceeds the target (the discriminator is
    overfitting), lower it otherwise; p moves by at most images/speed_images per call."""
    step = images / speed_images
    return float(min(1.0, max(0.0, probability + (step if real_sign_mean > target else -step))))
