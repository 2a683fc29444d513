"""The style objective shared by the optimisation path and the feed-forward network's training:
Gram (style) loss, content loss and total variation, each per image of a batch.

All three take N×3×H×W images in [−1, 1] (or their RandomFeatureNet features) and return an N-vector,
so one image's figure is the same whether it is scored alone or in a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from tasks.common.torch_utils import to_tensor_images
from tasks.style.features import RandomFeatureNet, gram_matrix


def working_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """The shape an image is stylised at: its longer side at `size`, never upscaled."""
    scale = min(1.0, size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize(images: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    if tuple(images.shape[-2:]) == tuple(shape):
        return images
    return F.interpolate(images, size=shape, mode="bicubic", align_corners=False, antialias=True)


def style_tensor(style_u8, working: tuple[int, int], device: torch.device) -> torch.Tensor:
    """The style image with its shorter side at the working image's shorter side, so its texture
    scale relates to the image it is matched against."""
    style = to_tensor_images(style_u8[None]).to(device)
    scale = min(working) / min(style.shape[-2:])
    return resize(style, (max(1, round(style.shape[-2] * scale)), max(1, round(style.shape[-1] * scale))))


@dataclass
class StyleTargets:
    """The style image's per-scale Gram matrices and channel means, with their squared norms."""

    grams: list[torch.Tensor]
    means: list[torch.Tensor]
    gram_norms: list[torch.Tensor]
    mean_norms: list[torch.Tensor]
    centred: bool

    @classmethod
    @torch.no_grad()
    def of(cls, net: RandomFeatureNet, style: torch.Tensor, centred: bool) -> "StyleTargets":
        features = net(style)
        grams = [gram_matrix(f, centred) for f in features]
        means = [f.mean(dim=(2, 3)) for f in features]
        return cls(grams, means, [g.square().sum().clamp_min(1e-12) for g in grams],
                   [m.square().sum().clamp_min(1e-12) for m in means], centred)


def gram_loss(features: list[torch.Tensor], targets: StyleTargets) -> torch.Tensor:
    """Per image: sum over scales of ‖G − G_style‖² / ‖G_style‖², plus the same relative distance
    of the channel means when the Gram matrices are centred."""
    total = sum((gram_matrix(f, targets.centred) - g).square().sum(dim=(1, 2)) / n
                for f, g, n in zip(features, targets.grams, targets.gram_norms))
    if targets.centred:
        total = total + sum((f.mean(dim=(2, 3)) - m).square().sum(dim=1) / n
                            for f, m, n in zip(features, targets.means, targets.mean_norms))
    return total


def content_loss(features: list[torch.Tensor], content_features: list[torch.Tensor],
                 layers: tuple[int, ...]) -> torch.Tensor:
    """Per image: mean over the content scales `layers` of ‖F − F_content‖² / ‖F_content‖²;
    `content_features` holds the content's features at those scales, in that order."""
    chosen = [features[i] for i in layers]
    total = sum((f - c).square().sum(dim=(1, 2, 3)) / c.square().sum(dim=(1, 2, 3)).clamp_min(1e-12)
                for f, c in zip(chosen, content_features))
    return total / max(1, len(chosen))


def tv_loss(images: torch.Tensor) -> torch.Tensor:
    """Per image: mean absolute difference of vertical plus horizontal neighbours."""
    return ((images[..., 1:, :] - images[..., :-1, :]).abs().mean(dim=(1, 2, 3))
            + (images[..., :, 1:] - images[..., :, :-1]).abs().mean(dim=(1, 2, 3)))
