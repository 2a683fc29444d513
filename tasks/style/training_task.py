"""Style network training task: dataset faces + a preset's image → a feed-forward StyleNetwork,
logged to MLflow and registered as avatarflow-style-<preset>. The version is promoted only if it
trained all its steps and, on held-out faces, its Gram loss is within `gate_gram_ratio` of the
optimisation path's and its landmark error is no worse (tasks.quality.gates)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from stores.dataset_store import DatasetStore
from stores.model_registry import register_model, style_model_name
from stores.tracking import RunTracker
from tasks.common.torch_utils import resolve_device
from tasks.common.training_io import flat_params, log_image, use_threads
from tasks.dataset.task import DatasetRef
from tasks.quality.gates import GateResult, style_gram_gate, style_landmark_gate, training_length_gate
from tasks.quality.grid import image_grid
from tasks.style.config import StyleConfig, StyleNetworkConfig
from tasks.style.network import StyleNetwork
from tasks.style.network_eval import PathFigures, compare_paths
from tasks.style.network_training import TrainingLog, TrainingReport, coloured_faces, train_style_network
from tasks.style.presets import resolve_style


def split_faces(faces_u8: np.ndarray, held_out: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training faces, held-out faces): a seeded split; at least one face stays for training."""
    if len(faces_u8) < 2:
        raise ValueError(f"style training needs at least 2 faces (one held out), got {len(faces_u8)}")
    held = min(held_out, len(faces_u8) - 1)
    order = np.random.default_rng(seed).permutation(len(faces_u8))
    return faces_u8[np.sort(order[held:])], faces_u8[np.sort(order[:held])]


def style_gates(config: StyleNetworkConfig, report: TrainingReport, network: PathFigures,
                optimisation: PathFigures) -> list[GateResult]:
    return [training_length_gate(report.steps, config.steps),
            style_gram_gate(network.gram_loss, optimisation.gram_loss, config.gate_gram_ratio),
            style_landmark_gate(network.landmark_error, optimisation.landmark_error, config.gate_landmark_tolerance)]


def _log_figures(tracker: RunTracker, network: PathFigures, optimisation: PathFigures, step: int) -> dict[str, float]:
    figures = {"network_gram_loss": network.gram_loss, "optimisation_gram_loss": optimisation.gram_loss,
               "gram_loss_ratio": network.gram_loss / max(optimisation.gram_loss, 1e-12),
               "coloured_gram_loss": network.gram_loss_before,
               "network_landmark_error": network.landmark_error,
               "optimisation_landmark_error": optimisation.landmark_error,
               "network_seconds_per_image": network.seconds_per_image,
               "optimisation_seconds_per_image": optimisation.seconds_per_image}
    tracker.log_metrics(figures, step=step)
    return figures


def train_and_register(faces_u8: np.ndarray, data_dir: str, preset: str, config: StyleNetworkConfig,
                       style_config: StyleConfig, device: str = "auto", log: Callable[[str], None] = print,
                       run_tags: dict[str, str] | None = None, params: dict | None = None) -> dict:
    """Train the preset's network on `faces_u8` (N×S×S×3 uint8 at `config.size`, some held out),
    compare it with the optimisation path on the held-out faces, log both to MLflow and register it
    (promoted only when every gate passes and it beats production). Returns the task's result."""
    torch_device = resolve_device(device)
    style_config = dataclasses.replace(style_config, device=torch_device.type)
    name = style_model_name(preset)
    _, style = resolve_style(preset)
    training, held_out = split_faces(faces_u8, config.held_out, config.seed)
    network = StyleNetwork(config, preset)

    with RunTracker(data_dir, "avatarflow-train", f"style-{preset}",
                    tags={"model": name, "preset": preset, **(run_tags or {})}) as tracker:
        tracker.log_params({**flat_params("style_network", config), **flat_params("style_loss", style_config),
                            "preset": preset, "device": str(torch_device), "training_faces": len(training),
                            "held_out": len(held_out), **(params or {})})

        def on_log(entry: TrainingLog) -> None:
            tracker.log_metrics({"loss": entry.loss, "gram_loss": entry.gram_loss, "content_loss": entry.content_loss,
                                 "steps_per_second": config.log_every / max(entry.seconds, 1e-9)}, step=entry.step)
            log(f"style {preset}: step {entry.step}/{config.steps}, loss {entry.loss:.4f} "
                f"(Gram {entry.gram_loss:.4f}, content {entry.content_loss:.4f})")

        # 1. Train (the loop only trains).
        report = train_style_network(network, coloured_faces(training, style, style_config), style, config,
                                     style_config, torch_device, on_log)
        tracker.log_params({"stopped_by": report.stopped_by, "steps_done": report.steps, "steps_target": config.steps})
        # 2. Both paths on the held-out faces.
        network_figures, optimisation_figures, results = compare_paths(held_out, style, network, style_config,
                                                                       seed=config.seed)
        figures = _log_figures(tracker, network_figures, optimisation_figures, report.steps)
        log_image(tracker, image_grid(np.concatenate([held_out, np.stack([r.image for r in results])]),
                                      columns=len(held_out)), "samples", "held_out.png")
        gates = style_gates(config, report, network_figures, optimisation_figures)
        tracker.log_dict({"gates": [gate.as_dict() for gate in gates],
                          "network": network_figures.as_dict(), "optimisation": optimisation_figures.as_dict()},
                         "gates.json")
        # 3. Register; the alias moves only if every gate passes and the ratio beats production's.
        registration = register_model(data_dir, network, name, "gram_loss_ratio", figures["gram_loss_ratio"],
                                      higher_is_better=False, gates=gates,
                                      tags={"preset": preset, "stopped_by": report.stopped_by,
                                            "steps_done": str(report.steps), "steps_target": str(config.steps),
                                            "working_size": str(config.size),
                                            **{key: f"{value:.6g}" for key, value in figures.items()}})
        tracker.log_params({"registered_version": registration.version, "promoted": registration.promoted,
                            "failed_gates": ",".join(registration.failed_gates) or "none"})
    log(f"style {preset}: {name} v{registration.version} Gram {network_figures.gram_loss:.4g} vs "
        f"optimisation {optimisation_figures.gram_loss:.4g} (×{figures['gram_loss_ratio']:.2f}), landmark "
        f"error {network_figures.landmark_error:.4f} vs {optimisation_figures.landmark_error:.4f}; "
        + ("now production" if registration.promoted else f"not promoted: {registration.reason}"))
    return {"model": name, "preset": preset, "version": registration.version, "promoted": registration.promoted,
            "steps": report.steps, "stopped_by": report.stopped_by, "seconds": round(report.seconds, 1),
            "train_images": report.steps * config.batch_size,
            **{f"final_{key}": value for key, value in figures.items()},
            "gates": [gate.as_dict() for gate in gates],
            "registration": dataclasses.asdict(registration), "run_id": tracker.run_id}


@task(name="train-style", cache_policy=NO_CACHE, persist_result=False)
def train_style_network_model(dataset: DatasetRef, data_dir: str, preset: str, config: StyleNetworkConfig,
                              style_config: StyleConfig | None = None, device: str = "auto",
                              threads: int | None = None) -> dict:
    threads = use_threads(threads)
    faces = DatasetStore(dataset.store_url).read_crops_at(dataset.name, config.size)
    return train_and_register(faces, data_dir, preset, config, style_config or StyleConfig(), device,
                              get_run_logger().info, run_tags={"dataset": dataset.fingerprint},
                              params={"threads": threads, "dataset.images": dataset.n_images})
