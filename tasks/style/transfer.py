"""Style transfer of one image: Lab colour transfer, then Gram-loss optimisation of the pixels."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from tasks.common.torch_utils import resolve_device, to_tensor_images, to_uint8_images
from tasks.style.colour import transfer_colour
from tasks.style.config import StyleConfig
from tasks.style.features import RandomFeatureNet, gram_matrix


@dataclass
class StyleResult:
    """A stylised image and how far the optimisation moved it toward the style."""

    image: np.ndarray
    """H×W×3 uint8, the input's size."""
    gram_loss_before: float
    """Style (Gram) loss of the colour-transferred input, the optimisation's starting point."""
    gram_loss_after: float
    """Style loss of the result (measured at the working size)."""
    gram_loss_raw: float
    """Style loss of the untouched input, before colour transfer."""
    content_loss: float
    """Relative feature distance of the result to the colour-transferred input."""
    seconds: float
    """Wall time of the whole call."""


def _working_shape(height: int, width: int, size: int) -> tuple[int, int]:
    scale = min(1.0, size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _tensor(image_u8: np.ndarray, device: torch.device) -> torch.Tensor:
    return to_tensor_images(image_u8[None]).to(device)


def _resize(images: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    if tuple(images.shape[-2:]) == shape:
        return images
    return F.interpolate(images, size=shape, mode="bicubic", align_corners=False, antialias=True)


class StyleLoss:
    """Style, content and total-variation losses of an image against fixed targets."""

    def __init__(self, net: RandomFeatureNet, style: torch.Tensor, content: torch.Tensor,
                 config: StyleConfig):
        self.net = net
        self.config = config
        with torch.no_grad():
            style_features = net(style)
            self.style_grams = [gram_matrix(f, config.centred_gram) for f in style_features]
            self.style_means = [f.mean(dim=(2, 3)) for f in style_features]
            content_features = net(content)
            self.content_features = [content_features[i] for i in config.content_layers]
        self.style_norms = [g.square().sum().clamp_min(1e-12) for g in self.style_grams]
        self.mean_norms = [m.square().sum().clamp_min(1e-12) for m in self.style_means]
        self.content_norms = [f.square().sum().clamp_min(1e-12) for f in self.content_features]

    def gram_loss(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Sum over scales of ‖G − G_style‖² / ‖G_style‖² (plus the same relative distance of
        the channel means when the Gram matrices are centred)."""
        total = sum((gram_matrix(f, self.config.centred_gram) - g).square().sum() / n
                    for f, g, n in zip(features, self.style_grams, self.style_norms))
        if self.config.centred_gram:
            total = total + sum((f.mean(dim=(2, 3)) - m).square().sum() / n
                                for f, m, n in zip(features, self.style_means, self.mean_norms))
        return total

    def content_loss(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Mean over the content scales of ‖F − F_content‖² / ‖F_content‖²."""
        chosen = [features[i] for i in self.config.content_layers]
        total = sum((f - c).square().sum() / n
                    for f, c, n in zip(chosen, self.content_features, self.content_norms))
        return total / max(1, len(chosen))

    @staticmethod
    def tv_loss(image: torch.Tensor) -> torch.Tensor:
        return ((image[..., 1:, :] - image[..., :-1, :]).abs().mean()
                + (image[..., :, 1:] - image[..., :, :-1]).abs().mean())

    def total(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.net(image)
        gram = self.gram_loss(features)
        content = self.content_loss(features)
        loss = (self.config.style_weight * gram + self.config.content_weight * content
                + self.config.tv_weight * self.tv_loss(image))
        return loss, gram, content


def stylise(content_u8: np.ndarray, style_u8: np.ndarray, config: StyleConfig, seed: int) -> StyleResult:
    """Give ``content_u8`` the colours and Gram statistics of ``style_u8`` (both H×W×3 uint8)."""
    for name, image in (("content", content_u8), ("style", style_u8)):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"{name} must be an H×W×3 uint8 image, got {image.shape} {image.dtype}")
    started = time.perf_counter()
    device = resolve_device(config.device)
    generator = torch.Generator().manual_seed(seed)
    height, width = content_u8.shape[:2]
    working = _working_shape(height, width, config.size)
    if min(working) >> (len(config.feature_channels) - 1) < 2:
        raise ValueError(f"content {content_u8.shape[:2]} is too small for {len(config.feature_channels)} feature scales")

    # 1. Colour transfer in Lab space: the optimisation starts from the style's palette.
    coloured_u8 = transfer_colour(content_u8, style_u8, config.colour_strength)
    coloured_full = _tensor(coloured_u8, device)
    coloured = _resize(coloured_full, working)
    raw = _resize(_tensor(content_u8, device), working)

    # 2. Targets: Gram matrices of the style (its shorter side at the working size, so its
    #    texture scale relates to the working image) and features of the coloured content.
    style = _tensor(style_u8, device)
    style_scale = min(working) / min(style.shape[-2:])
    style = _resize(style, (max(1, round(style.shape[-2] * style_scale)), max(1, round(style.shape[-1] * style_scale))))
    net = RandomFeatureNet(config.feature_channels, seed=config.feature_seed).to(device)
    losses = StyleLoss(net, style, coloured, config)
    with torch.no_grad():
        gram_loss_raw = float(losses.gram_loss(net(raw)))
        gram_loss_before = float(losses.gram_loss(net(coloured)))

    # 3. Optimise the pixels, from the coloured content plus seeded noise, on style + content + TV.
    noise = torch.randn(coloured.shape, generator=generator).to(device) * config.init_noise
    image = (coloured + noise).clamp(-1.0, 1.0).requires_grad_(True)
    optimiser = torch.optim.Adam([image], lr=config.learning_rate)
    for _ in range(config.steps):
        optimiser.zero_grad(set_to_none=True)
        loss, _, _ = losses.total(image)
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            image.clamp_(-1.0, 1.0)

    # 4. Back to the input size: either the stylisation residual on the full-size coloured
    #    input (keeps its fine detail) or the upsampled working image.
    with torch.no_grad():
        stylised = image.detach()
        if config.preserve_detail:
            full = coloured_full + _resize(stylised - coloured, (height, width))
        else:
            full = _resize(stylised, (height, width))
        result_u8 = to_uint8_images(full.clamp(-1.0, 1.0))[0]
        # The metrics are taken on the delivered image, brought to the working size.
        final_features = net(_resize(_tensor(result_u8, device), working))
        gram_loss_after = float(losses.gram_loss(final_features))
        content_loss = float(losses.content_loss(final_features))
    return StyleResult(image=result_u8, gram_loss_before=gram_loss_before, gram_loss_after=gram_loss_after,
                       gram_loss_raw=gram_loss_raw, content_loss=content_loss,
                       seconds=time.perf_counter() - started)
