"""GAN training task: dataset crops → trained generator, checkpointed per epoch, logged to
MLflow with losses, face metrics and sample grids, and registered as avatarflow-gan. The version
is promoted only if it passes the promotion gates (tasks.quality.gates)."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from stores.dataset_store import DatasetStore
from stores.model_registry import GAN_MODEL, register_model
from stores.tracking import RunTracker
from tasks.common.torch_utils import resolve_device, to_uint8_images
from tasks.common.training_io import (checkpoint_path, flat_params, load_checkpoint, log_image, save_checkpoint,
                                      use_threads)
from tasks.dataset.sources import balanced_weights
from tasks.dataset.task import DatasetRef, reference_shapes
from tasks.gan.config import GanConfig
from tasks.gan.sampling import generate_faces, latent_for_seed
from tasks.gan.training import BalancedBatches, EpochReport, GanTrainer, set_mean_face, train_gan
from tasks.quality.gates import (GateResult, face_rate_gate, frechet_gate, mean_face_frechet, memorisation_gate,
                                 sample_nn_distances, spread_gate, training_length_gate, training_nn_distances,
                                 training_pool)
from tasks.quality.grid import image_grid
from tasks.quality.metrics import FaceQuality, evaluate_faces, reference_spread

EVAL_SEED = 1_000_000
"""First latent seed of the evaluation samples; fixed so epochs are compared on the same draws."""


def sample_faces(generator, config: GanConfig, count: int, truncation: float) -> np.ndarray:
    latents = np.stack([latent_for_seed(EVAL_SEED + i, config.z_dim) for i in range(count)])
    return to_uint8_images(generate_faces(generator, latents, truncation, noise_seed=EVAL_SEED))


def gan_gates(config: GanConfig, steps_done: int, quality: FaceQuality, samples_u8: np.ndarray,
              training_u8: np.ndarray, reference: np.ndarray) -> tuple[list[GateResult], dict[str, float]]:
    """The GAN's promotion gates and the figures behind them (logged as metrics)."""
    baseline, mean_has_face = mean_face_frechet(training_u8, reference)
    pool = training_pool(training_u8)
    sample_nn, training_nn = sample_nn_distances(samples_u8, pool), training_nn_distances(pool)
    training_spread = reference_spread(reference, quality.n_faces)
    gates = [training_length_gate(steps_done, config.steps),
             face_rate_gate(quality.face_rate, config.gate_min_face_rate),
             frechet_gate(quality.landmark_frechet, baseline, config.gate_frechet_ratio),
             spread_gate(quality.identity_spread, training_spread, config.gate_min_spread_share),
             memorisation_gate(sample_nn, training_nn, config.gate_memorisation_ratio,
                               config.gate_max_copy_share)]
    figures = {"mean_face_landmark_frechet": baseline, "mean_face_has_face": float(mean_has_face),
               "identity_spread": quality.identity_spread, "training_identity_spread": training_spread,
               "sample_nn_distance_median": float(np.median(sample_nn)),
               "sample_nn_distance_min": float(np.min(sample_nn)),
               "sample_copy_share": float(np.mean(sample_nn < np.min(training_nn))),
               "training_nn_distance_median": float(np.median(training_nn)),
               "training_nn_distance_min": float(np.min(training_nn)),
               "memorisation_pool": float(len(pool))}
    return gates, figures


@task(name="train-gan", cache_policy=NO_CACHE, persist_result=False)
def train_gan_model(dataset: DatasetRef, data_dir: str, config: GanConfig, device: str = "auto",
                    threads: int | None = None, resume: bool = True) -> dict:
    logger = get_run_logger()
    threads = use_threads(threads)
    torch_device = resolve_device(device)
    store = DatasetStore(dataset.store_url)
    images = store.read_crops_at(dataset.name, config.resolution)
    weights = balanced_weights(store.read_labels(dataset.name))
    reference = reference_shapes(store, dataset.name)

    trainer = GanTrainer(config, torch_device)
    set_mean_face(trainer, images)
    batches = BalancedBatches(images, weights, config.batch_size, seed=config.seed)
    checkpoint = checkpoint_path(data_dir, "gan", dataset.fingerprint, config)
    state = load_checkpoint(checkpoint) if resume else None
    if state is not None:
        trainer.load_state_dict(state["trainer"])
        batches.random.bit_generator.state = state["batches"]
        logger.info(f"gan: resuming from step {trainer.step_count} ({checkpoint})")

    with RunTracker(data_dir, "avatarflow-train", f"gan-{dataset.name}",
                    tags={"model": GAN_MODEL, "dataset": dataset.fingerprint}) as tracker:
        tracker.log_params({**flat_params("gan", config), "device": str(torch_device), "threads": threads,
                            "dataset.images": dataset.n_images, "dataset.labels": dataset.label_counts,
                            "resumed_from_step": trainer.step_count})
        started, start_images = time.perf_counter(), trainer.images_seen

        def on_epoch(report: EpochReport) -> None:
            faces = sample_faces(trainer.generator_ema, config, config.eval_samples, config.truncation)
            quality = evaluate_faces(faces, reference)
            rate = (trainer.images_seen - start_images) / max(time.perf_counter() - started, 1e-9)
            tracker.log_metrics({"d_loss": report.d_loss, "g_loss": report.g_loss, "r1": report.r1,
                                 "augment_p": report.augment_p,
                                 "face_rate": quality.face_rate, "landmark_frechet": quality.landmark_frechet,
                                 "identity_spread": quality.identity_spread,
                                 "images_per_second": rate}, step=report.step)
            log_image(tracker, image_grid(faces[:32]), "samples", f"step{report.step:07d}.png")
            save_checkpoint(checkpoint, {"trainer": trainer.state_dict(), "batches": batches.random.bit_generator.state})
            logger.info(f"gan: step {report.step}/{config.steps}, {trainer.images_seen} images, "
                        f"{rate:.1f} img/s, D {report.d_loss:.3f} G {report.g_loss:.3f}, "
                        f"faces {quality.face_rate:.0%}, landmark FD {quality.landmark_frechet:.1f}")

        reports = train_gan(trainer, batches, on_epoch)
        seconds = time.perf_counter() - started
        # 1. How training ended: a wall-clock cap that cut it short blocks promotion.
        stopped_by = "steps" if trainer.step_count >= config.steps else "time"
        tracker.log_params({"stopped_by": stopped_by, "steps_done": trainer.step_count, "steps_target": config.steps})
        # 2. Registration metrics on more draws than the per-epoch check.
        faces = sample_faces(trainer.generator_ema, config, max(config.eval_samples, 128), config.truncation)
        quality = evaluate_faces(faces, reference)
        untruncated = evaluate_faces(sample_faces(trainer.generator_ema, config, config.eval_samples, 1.0), reference)
        gates, figures = gan_gates(config, trainer.step_count, quality, faces, images, reference)
        final = {"final_face_rate": quality.face_rate, "final_landmark_frechet": quality.landmark_frechet,
                 "final_face_rate_untruncated": untruncated.face_rate, "train_seconds": seconds,
                 "train_images": trainer.images_seen, **{f"final_{k}": v for k, v in figures.items()}}
        tracker.log_metrics(final, step=trainer.step_count)
        tracker.log_dict({"gates": [gate.as_dict() for gate in gates]}, "gates.json")
        log_image(tracker, image_grid(faces[:64]), "samples", "final.png")
        # 3. Register; the alias moves only if every gate passes and the face rate beats production's.
        registration = register_model(data_dir, trainer.generator_ema, GAN_MODEL, "face_rate", quality.face_rate,
                                      higher_is_better=True, gates=gates,
                                      tags={"stopped_by": stopped_by, "steps_done": str(trainer.step_count),
                                            "steps_target": str(config.steps),
                                            "landmark_frechet": f"{quality.landmark_frechet:.6g}",
                                            "mean_face_landmark_frechet": f"{figures['mean_face_landmark_frechet']:.6g}",
                                            "identity_spread": f"{quality.identity_spread:.6g}",
                                            "training_identity_spread": f"{figures['training_identity_spread']:.6g}"})
        tracker.log_params({"registered_version": registration.version, "promoted": registration.promoted,
                            "failed_gates": ",".join(registration.failed_gates) or "none"})
    logger.info(f"gan: {GAN_MODEL} v{registration.version} face rate {quality.face_rate:.0%} "
                f"(untruncated {untruncated.face_rate:.0%}), landmark FD {quality.landmark_frechet:.1f} "
                f"(mean face {figures['mean_face_landmark_frechet']:.1f}), identity spread {quality.identity_spread:.3f} "
                f"(training faces {figures['training_identity_spread']:.3f}), {trainer.step_count}/{config.steps} steps; "
                + ("now production" if registration.promoted else f"not promoted: {registration.reason}"))
    return {"model": GAN_MODEL, "version": registration.version, "promoted": registration.promoted,
            "steps": trainer.step_count, "stopped_by": stopped_by, "epochs": len(reports), "seconds": round(seconds, 1),
            **final, "gates": [gate.as_dict() for gate in gates],
            "registration": dataclasses.asdict(registration), "run_id": tracker.run_id}
