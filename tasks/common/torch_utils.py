"""Small torch helpers shared by the generative stages: device choice, EMA, image conversion."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def resolve_device(name: str) -> torch.device:
    """"auto" → CUDA where present, else the CPU; "cpu"; "cuda" (an error when no GPU is visible)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but torch sees no CUDA GPU; use --device auto or cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, decay: float) -> None:
    """target ← decay·target + (1 − decay)·source for parameters; buffers are copied."""
    for target_param, source_param in zip(target.parameters(), source.parameters()):
        target_param.lerp_(source_param.detach(), 1.0 - decay)
    for target_buffer, source_buffer in zip(target.buffers(), source.buffers()):
        target_buffer.copy_(source_buffer)


def to_tensor_images(images_u8: np.ndarray) -> torch.Tensor:
    """N×H×W×3 uint8 → N×3×H×W float32 in [-1, 1]."""
    array = np.asarray(images_u8)
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected N×H×W×3 uint8 images, got {array.shape} {array.dtype}")
    if not array.flags.writeable:  # torch.from_numpy warns on read-only arrays (e.g. from PIL or zarr)
        array = array.copy()
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8_images(images: torch.Tensor) -> np.ndarray:
    """N×3×H×W float in [-1, 1] → N×H×W×3 uint8 on the CPU (values outside are clamped)."""
    scaled = (images.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5
    return scaled.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
