"""Style transfer of one image: Lab colour transfer, then Gram-loss optimisation of the pixels."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from tasks.common.torch_utils import resolve_device, to_tensor_images, to_uint8_images
from tasks.style.colour import transfer_colour
from tasks.style.config import StyleConfig
from tasks.style.features import RandomFeatureNet
from tasks.style.losses import StyleTargets, content_loss, gram_loss, resize, style_tensor, tv_loss, working_shape


@dataclass
class StyleResult:
    """A stylised image and how far it moved toward the style (either path)."""

    image: np.ndarray
    """H×W×3 uint8, the input's size."""
    gram_loss_before: float
    """Style (Gram) loss of the colour-transferred input, where both paths start."""
    gram_loss_after: float
    """Style loss of the result (measured at the working size)."""
    gram_loss_raw: float
    """Style loss of the untouched input, before colour transfer."""
    content_loss: float
    """Relative feature distance of the result to the colour-transferred input."""
    seconds: float
    """Wall time of the whole call."""


class StyleLoss:
    """Style, content and total-variation losses of one image against fixed targets (the shared
    per-image losses of tasks.style.losses, summed over the batch of one)."""

    def __init__(self, net: RandomFeatureNet, style: torch.Tensor, content: torch.Tensor,
                 config: StyleConfig):
        self.net = net
        self.config = config
        self.targets = StyleTargets.of(net, style, config.centred_gram)
        with torch.no_grad():
            content_features = net(content)
            self.content_features = [content_features[i] for i in config.content_layers]

    def gram_loss(self, features: list[torch.Tensor]) -> torch.Tensor:
        return gram_loss(features, self.targets).sum()

    def content_loss(self, features: list[torch.Tensor]) -> torch.Tensor:
        return content_loss(features, self.content_features, self.config.content_layers).sum()

    def total(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.net(image)
        gram = self.gram_loss(features)
        content = self.content_loss(features)
        loss = (self.config.style_weight * gram + self.config.content_weight * content
                + self.config.tv_weight * tv_loss(image).sum())
        return loss, gram, content


def _check_images(content_u8: np.ndarray, style_u8: np.ndarray) -> None:
    for name, image in (("content", content_u8), ("style", style_u8)):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"{name} must be an H×W×3 uint8 image, got {image.shape} {image.dtype}")


def _tensor(image_u8: np.ndarray, device: torch.device) -> torch.Tensor:
    return to_tensor_images(image_u8[None]).to(device)


@dataclass
class _Prepared:
    """What both paths start from: the colour-transferred input (full size and at the working
    size), the untouched input at the working size, and the losses against the style."""

    coloured_full: torch.Tensor
    coloured: torch.Tensor
    raw: torch.Tensor
    net: RandomFeatureNet
    losses: StyleLoss
    working: tuple[int, int]


def _prepare(content_u8: np.ndarray, style_u8: np.ndarray, config: StyleConfig, size: int,
             device: torch.device) -> _Prepared:
    _check_images(content_u8, style_u8)
    working = working_shape(*content_u8.shape[:2], size)
    if min(working) >> (len(config.feature_channels) - 1) < 2:
        raise ValueError(f"content {content_u8.shape[:2]} is too small for {len(config.feature_channels)} feature scales")
    # Colour transfer in Lab space: both paths start from the style's palette.
    coloured_full = _tensor(transfer_colour(content_u8, style_u8, config.colour_strength), device)
    coloured = resize(coloured_full, working)
    raw = resize(_tensor(content_u8, device), working)
    # Targets: Gram matrices of the style (its shorter side at the working size, so its texture
    # scale relates to the working image) and features of the coloured content.
    net = RandomFeatureNet(config.feature_channels, seed=config.feature_seed).to(device)
    losses = StyleLoss(net, style_tensor(style_u8, working, device), coloured, config)
    return _Prepared(coloured_full, coloured, raw, net, losses, working)


@torch.no_grad()
def _deliver(stylised: torch.Tensor, prepared: _Prepared, config: StyleConfig, started: float) -> StyleResult:
    """Back to the input size: either the stylisation residual on the full-size coloured input
    (keeps its fine detail) or the upsampled working image; the metrics are taken on the delivered
    image, brought to the working size."""
    net, losses, coloured = prepared.net, prepared.losses, prepared.coloured
    full_shape = tuple(prepared.coloured_full.shape[-2:])
    if config.preserve_detail:
        full = prepared.coloured_full + resize(stylised - coloured, full_shape)
    else:
        full = resize(stylised, full_shape)
    result_u8 = to_uint8_images(full.clamp(-1.0, 1.0))[0]
    final_features = net(resize(_tensor(result_u8, coloured.device), prepared.working))
    return StyleResult(image=result_u8, gram_loss_before=float(losses.gram_loss(net(coloured))),
                       gram_loss_after=float(losses.gram_loss(final_features)),
                       gram_loss_raw=float(losses.gram_loss(net(prepared.raw))),
                       content_loss=float(losses.content_loss(final_features)),
                       seconds=time.perf_counter() - started)


def stylise(content_u8: np.ndarray, style_u8: np.ndarray, config: StyleConfig, seed: int) -> StyleResult:
    """Give ``content_u8`` the colours and Gram statistics of ``style_u8`` (both H×W×3 uint8) by
    optimising the pixels of its working-size copy."""
    started = time.perf_counter()
    device = resolve_device(config.device)
    generator = torch.Generator().manual_seed(seed)
    prepared = _prepare(content_u8, style_u8, config, config.size, device)
    # Optimise the pixels, from the coloured content plus seeded noise, on style + content + TV.
    noise = torch.randn(prepared.coloured.shape, generator=generator).to(device) * config.init_noise
    image = (prepared.coloured + noise).clamp(-1.0, 1.0).requires_grad_(True)
    optimiser = torch.optim.Adam([image], lr=config.learning_rate)
    for _ in range(config.steps):
        optimiser.zero_grad(set_to_none=True)
        loss, _, _ = prepared.losses.total(image)
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            image.clamp_(-1.0, 1.0)
    return _deliver(image.detach(), prepared, config, started)


def stylise_with_network(content_u8: np.ndarray, style_u8: np.ndarray, network, config: StyleConfig) -> StyleResult:
    """The same result shape as `stylise`, from one pass of a trained feed-forward StyleNetwork
    (tasks.style.network) at the working size it was trained at; `style_u8` is its preset's image,
    used for the colour transfer and the metrics."""
    started = time.perf_counter()
    device = next(network.parameters()).device
    prepared = _prepare(content_u8, style_u8, config, network.size, device)
    with torch.no_grad():
        stylised = network(prepared.coloured)
    return _deliver(stylised, prepared, config, started)
