"""The network and the optimisation path side by side on the same held-out faces: Gram loss,
landmark error (MediaPipe) and seconds per image, the figures the style promotion gates compare."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from tasks.style.config import StyleConfig
from tasks.style.metrics import content_landmark_error
from tasks.style.transfer import StyleResult, stylise, stylise_with_network


@dataclass(frozen=True)
class PathFigures:
    """One path's figures over the held-out faces."""

    gram_loss: float
    """Mean Gram loss of the delivered images, at the working size (tasks.style.losses)."""
    landmark_error: float
    """Mean content landmark error over the faces MediaPipe finds on the original (inf when a
    stylised image lost its face, NaN when no original had one)."""
    gram_loss_before: float
    """Mean Gram loss of the colour-transferred faces: where both paths start."""
    seconds_per_image: float
    images: int

    def as_dict(self) -> dict:
        return asdict(self)


def _figures(originals: np.ndarray, results: list[StyleResult], seconds: float) -> PathFigures:
    errors = [content_landmark_error(original, result.image) for original, result in zip(originals, results)]
    found = [error for error in errors if error is not None]
    return PathFigures(gram_loss=float(np.mean([r.gram_loss_after for r in results])),
                       landmark_error=float(np.mean(found)) if found else math.nan,
                       gram_loss_before=float(np.mean([r.gram_loss_before for r in results])),
                       seconds_per_image=seconds / max(1, len(results)), images=len(results))


def _timed(function, faces_u8: np.ndarray) -> tuple[list[StyleResult], float]:
    started = time.perf_counter()
    results = [function(face) for face in faces_u8]
    return results, time.perf_counter() - started


def compare_paths(faces_u8: np.ndarray, style_u8: np.ndarray, network, config: StyleConfig,
                  seed: int = 0) -> tuple[PathFigures, PathFigures, list[StyleResult]]:
    """(network figures, optimisation figures, the network's results) on the same faces
    (N×H×W×3 uint8, H and W at most `network.size`, so both paths work at the faces' own size)."""
    if len(faces_u8) == 0:
        raise ValueError("no held-out faces to compare the style paths on")
    if max(faces_u8.shape[1:3]) > network.size or max(faces_u8.shape[1:3]) > config.size:
        raise ValueError(f"held-out faces {faces_u8.shape[1:3]} are larger than the working sizes "
                         f"(network {network.size}, optimisation {config.size})")
    network_results, network_seconds = _timed(lambda face: stylise_with_network(face, style_u8, network, config),
                                              faces_u8)
    optimised, optimised_seconds = _timed(lambda face: stylise(face, style_u8, config, seed=seed), faces_u8)
    return (_figures(faces_u8, network_results, network_seconds), _figures(faces_u8, optimised, optimised_seconds),
            network_results)
