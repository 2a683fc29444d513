"""Training of the v-prediction UNets: loss, one-step trainer with EMA, and a step/time-capped loop."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tasks.common.torch_utils import ema_update
from tasks.diffusion.config import DiffusionConfig
from tasks.diffusion.sampling import upsample_condition
from tasks.diffusion.schedule import velocity, cosine_alpha_bar, q_sample


def diffusion_loss(
    model: nn.Module,
    x0: torch.Tensor,
    alpha_bar: torch.Tensor,
    generator: torch.Generator,
    cond: torch.Tensor | None = None,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared error of the predicted v at uniformly random t (or the given t and noise)."""
    n = x0.shape[0]
    if t is None:
        t = torch.randint(0, alpha_bar.shape[0], (n,), generator=generator, device=generator.device)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=generator.device)
    t = t.to(x0.device)
    noise = noise.to(x0.device, x0.dtype)
    x_t = q_sample(x0, t, noise, alpha_bar)
    return F.mse_loss(model(x_t, t, cond), velocity(x0, t, noise, alpha_bar))


def make_sr_pair(x_hi: torch.Tensor, factor: int, residual_scale: float = 4.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(target, condition) for the upscaler: the condition is x_hi area-downsampled by factor and
    upsampled back; the target is the detail it lacks, (x_hi − condition) × residual_scale."""
    if x_hi.shape[-1] % factor or x_hi.shape[-2] % factor:
        raise ValueError(f"image side {tuple(x_hi.shape[-2:])} is not divisible by factor {factor}")
    low_res = F.interpolate(x_hi, scale_factor=1.0 / factor, mode="area")
    cond = upsample_condition(low_res, factor)
    return (x_hi - cond) * residual_scale, cond


class DiffusionTrainer:
    """AdamW on the v-MSE loss, with an EMA copy of the weights for sampling."""

    def __init__(
        self,
        model: nn.Module,
        alpha_bar: torch.Tensor,
        learning_rate: float,
        ema_decay: float,
        seed: int = 0,
        warmup_steps: int = 0,
        weight_decay: float = 0.0,
        grad_clip: float = 1.0,
        micro_batch_size: int = 0,
    ) -> None:
        self.model = model
        self.ema = copy.deepcopy(model).eval().requires_grad_(False)
        device = next(model.parameters()).device
        self.alpha_bar = alpha_bar.to(device)
        self.learning_rate = learning_rate
        self.ema_decay = ema_decay
        self.warmup_steps = warmup_steps
        self.grad_clip = grad_clip
        # Splitting bounds a CPU box's memory; on a GPU it would only cost throughput.
        self.micro_batch_size = micro_batch_size if device.type == "cpu" else 0
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.step_count = 0

    @classmethod
    def from_config(cls, model: nn.Module, config: DiffusionConfig) -> DiffusionTrainer:
        return cls(
            model,
            cosine_alpha_bar(config.timesteps),
            learning_rate=config.learning_rate,
            ema_decay=config.ema_decay,
            seed=config.seed,
            warmup_steps=config.warmup_steps,
            micro_batch_size=config.micro_batch_size,
        )

    def step(self, batch_x0: torch.Tensor, cond: torch.Tensor | None = None) -> float:
        """One optimisation step on a batch of clean images in [-1, 1]; returns the loss."""
        self.model.train()
        scale = min(1.0, (self.step_count + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate * scale
        # t and noise are drawn for the whole batch first, so its split changes nothing but memory.
        n = batch_x0.shape[0]
        t = torch.randint(0, self.alpha_bar.shape[0], (n,), generator=self.generator, device=self.generator.device)
        noise = torch.randn(batch_x0.shape, generator=self.generator, device=self.generator.device)
        part = self.micro_batch_size or n
        self.optimizer.zero_grad(set_to_none=True)
        loss = torch.zeros((), device=batch_x0.device)
        for start in range(0, n, part):
            piece = slice(start, start + part)
            piece_loss = diffusion_loss(self.model, batch_x0[piece], self.alpha_bar, self.generator,
                                        None if cond is None else cond[piece], t=t[piece], noise=noise[piece])
            # A part's mean, weighted by its share of the batch: the sum is the batch's mean.
            weighted = piece_loss * (batch_x0[piece].shape[0] / n)
            weighted.backward()
            loss = loss + weighted.detach()
        if self.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        # EMA warm-up: early weights are poor, so the average forgets them faster at first.
        decay = min(self.ema_decay, (1.0 + self.step_count) / (10.0 + self.step_count))
        ema_update(self.ema, self.model, decay)
        self.step_count += 1
        return float(loss.detach())

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step_count,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        # Deep copy: Optimizer.load_state_dict keeps same-device moment tensors by reference.
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.step_count = int(state["step"])
        if "generator" in state:
            self.generator.set_state(state["generator"])


def random_batch(images: torch.Tensor, batch_size: int, generator: torch.Generator, flip: bool = True) -> torch.Tensor:
    """batch_size images drawn with replacement from N×3×H×W images, half mirrored left-right."""
    index = torch.randint(0, images.shape[0], (batch_size,), generator=generator, device=generator.device)
    batch = images[index.to(images.device)]
    if flip:
        mirror = torch.rand(batch_size, generator=generator, device=generator.device) < 0.5
        batch = torch.where(mirror.to(images.device)[:, None, None, None], batch.flip(-1), batch)
    return batch


def random_crop(
    tensors: tuple[torch.Tensor, ...], size: int, generator: torch.Generator, multiple: int = 1
) -> tuple[torch.Tensor, ...]:
    """The same random size×size window (top-left on a grid of `multiple` pixels) from each N×C×H×W tensor."""
    height, width = tensors[0].shape[-2:]
    if any(t.shape[-2:] != (height, width) for t in tensors):
        raise ValueError("tensors to crop together must share their height and width")
    if not 0 < size <= min(height, width):
        raise ValueError(f"crop size {size} does not fit in {height}×{width}")
    top = int(torch.randint(0, (height - size) // multiple + 1, (1,), generator=generator)) * multiple
    left = int(torch.randint(0, (width - size) // multiple + 1, (1,), generator=generator)) * multiple
    return tuple(t[..., top : top + size, left : left + size] for t in tensors)


@dataclass(frozen=True)
class FitResult:
    """How a training run ended."""

    steps: int
    """Trainer step count at the end (includes steps from a resumed checkpoint)."""

    seconds: float
    """Wall-clock seconds of this call."""

    mean_loss: float
    """Mean loss over the steps of this call (nan when none ran)."""

    stopped_by: str
    """"steps" when the step budget was reached, "time" when max_seconds ran out."""


def fit(
    trainer: DiffusionTrainer,
    next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor | None]],
    steps: int,
    max_seconds: float,
    on_step: Callable[[int, float], None] | None = None,
) -> FitResult:
    """Train until trainer.step_count reaches steps or max_seconds pass, whichever comes first.

    next_batch returns (x0, cond or None); on_step(step, loss) is called after every step.
    """
    started = time.monotonic()
    losses: list[float] = []
    stopped_by = "steps"
    while trainer.step_count < steps:
        if time.monotonic() - started >= max_seconds:
            stopped_by = "time"
            break
        x0, cond = next_batch()
        loss = trainer.step(x0, cond)
        losses.append(loss)
        if on_step is not None:
            on_step(trainer.step_count, loss)
    return FitResult(
        steps=trainer.step_count,
        seconds=time.monotonic() - started,
        mean_loss=sum(losses) / len(losses) if losses else float("nan"),
        stopped_by=stopped_by,
    )
