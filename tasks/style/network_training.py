"""Training of a feed-forward StyleNetwork on faces, with the optimisation path's own objective
(tasks.style.losses): Gram loss to the preset's image, content loss to each colour-transferred face,
total variation. The loop only trains; evaluation is tasks.style.network_eval, logging the task's."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from tasks.common.torch_utils import to_tensor_images
from tasks.style.colour import transfer_colour
from tasks.style.config import StyleConfig, StyleNetworkConfig
from tasks.style.features import RandomFeatureNet
from tasks.style.losses import StyleTargets, content_loss, gram_loss, style_tensor, tv_loss
from tasks.style.network import StyleNetwork


@dataclass
class TrainingLog:
    """Mean losses over the steps since the previous log point."""

    step: int
    loss: float
    gram_loss: float
    content_loss: float
    seconds: float


@dataclass
class TrainingReport:
    steps: int
    """Steps done (counting any done before this call)."""
    seconds: float
    stopped_by: str
    """"steps" when the step budget was reached, "time" when the wall-clock cap stopped it."""
    logs: list[TrainingLog] = field(default_factory=list)


def coloured_faces(faces_u8: np.ndarray, style_u8: np.ndarray, config: StyleConfig) -> np.ndarray:
    """Each face colour-transferred toward the style, as both paths do first (N×S×S×3 uint8)."""
    return np.stack([transfer_colour(face, style_u8, config.colour_strength) for face in faces_u8])


def train_style_network(network: StyleNetwork, coloured_u8: np.ndarray, style_u8: np.ndarray,
                        config: StyleNetworkConfig, style_config: StyleConfig, device: torch.device,
                        on_log: Callable[[TrainingLog], None] | None = None) -> TrainingReport:
    """Adam on the mean over a batch of style_weight·Gram + content_weight·content + tv_weight·TV
    (the weights, feature net and Gram form of `style_config`), for `config.steps` steps or until
    `config.max_seconds`. `coloured_u8`: the training faces, colour-transferred, at the network's size."""
    if len(coloured_u8) == 0:
        raise ValueError("no training faces to train the style network on")
    started = time.perf_counter()
    images = to_tensor_images(coloured_u8).to(device)
    generator = torch.Generator().manual_seed(config.seed + 1)
    # 1. Fixed targets: the preset's Gram statistics at the training scale.
    features = RandomFeatureNet(style_config.feature_channels, seed=style_config.feature_seed).to(device)
    targets = StyleTargets.of(features, style_tensor(style_u8, tuple(images.shape[-2:]), device),
                              style_config.centred_gram)
    network.to(device).train()
    optimiser = torch.optim.Adam(network.parameters(), lr=config.learning_rate)
    # The rate decays to 0 by the last step, so the network that is judged and registered is a settled
    # one, not wherever Adam's oscillation stood (a 60-step net ended at 0.85-7.3× the optimisation
    # path's Gram loss with a constant rate, depending on the rate and the machine).
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.steps)
    report = TrainingReport(steps=0, seconds=0.0, stopped_by="steps")
    sums, counted, leg_started = np.zeros(3), 0, time.perf_counter()
    for step in range(1, config.steps + 1):
        if time.perf_counter() - started > config.max_seconds:
            report.stopped_by = "time"
            break
        # 2. A random batch (a random patch of it); its content targets are its own features.
        batch = images[torch.randint(len(images), (config.batch_size,), generator=generator).to(device)]
        if 0 < config.patch < max(batch.shape[-2:]):
            top, left = (int(torch.randint(side - config.patch + 1, (1,), generator=generator))
                         for side in batch.shape[-2:])
            batch = batch[..., top:top + config.patch, left:left + config.patch]
        with torch.no_grad():
            batch_features = features(batch)
            content = [batch_features[i] for i in style_config.content_layers]
        # 3. One step on the shared objective.
        output = network(batch)
        output_features = features(output)
        gram = gram_loss(output_features, targets).mean()
        kept = content_loss(output_features, content, style_config.content_layers).mean()
        loss = (style_config.style_weight * gram + style_config.content_weight * kept
                + style_config.tv_weight * tv_loss(output).mean())
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        report.steps = step
        sums += (loss.item(), gram.item(), kept.item())
        counted += 1
        if on_log is not None and (step % config.log_every == 0 or step == config.steps):
            mean = sums / counted
            on_log(TrainingLog(step, *mean.tolist(), seconds=time.perf_counter() - leg_started))
            sums, counted, leg_started = np.zeros(3), 0, time.perf_counter()
    network.eval()
    report.seconds = time.perf_counter() - started
    return report
