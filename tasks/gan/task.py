"""GAN training task: dataset crops → trained generator, checkpointed per epoch, logged to
MLflow with losses, face metrics and sample grids, and registered as avatarflow-gan."""

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
from tasks.quality.grid import image_grid
from tasks.quality.metrics import evaluate_faces

EVAL_SEED = 1_000_000
"""First latent seed of the evaluation samples; fixed so epochs are compared on the same draws."""


def sample_faces(generator, config: GanConfig, count: int, truncation: float) -> np.ndarray:
    latents = np.stack([latent_for_seed(EVAL_SEED + i, config.z_dim) for i in range(count)])
    return to_uint8_images(generate_faces(generator, latents, truncation, noise_seed=EVAL_SEED))


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
                                 "images_per_second": rate}, step=report.step)
            log_image(tracker, image_grid(faces[:32]), "samples", f"step{report.step:07d}.png")
            save_checkpoint(checkpoint, {"trainer": trainer.state_dict(), "batches": batches.random.bit_generator.state})
            logger.info(f"gan: step {report.step}/{config.steps}, {trainer.images_seen} images, "
                        f"{rate:.1f} img/s, D {report.d_loss:.3f} G {report.g_loss:.3f}, "
                        f"faces {quality.face_rate:.0%}, landmark FD {quality.landmark_frechet:.1f}")

        reports = train_gan(trainer, batches, on_epoch)
        seconds = time.perf_counter() - started
        # 1. Registration metrics on more draws than the per-epoch check.
        faces = sample_faces(trainer.generator_ema, config, max(config.eval_samples, 128), config.truncation)
        quality = evaluate_faces(faces, reference)
        untruncated = evaluate_faces(sample_faces(trainer.generator_ema, config, config.eval_samples, 1.0), reference)
        final = {"final_face_rate": quality.face_rate, "final_landmark_frechet": quality.landmark_frechet,
                 "final_face_rate_untruncated": untruncated.face_rate, "train_seconds": seconds,
                 "train_images": trainer.images_seen}
        tracker.log_metrics(final, step=trainer.step_count)
        log_image(tracker, image_grid(faces[:64]), "samples", "final.png")
        # 2. Register; the alias moves only if the face rate beats production's.
        registration = register_model(data_dir, trainer.generator_ema, GAN_MODEL, "face_rate", quality.face_rate,
                                      higher_is_better=True)
        tracker.log_params({"registered_version": registration.version, "promoted": registration.promoted})
    logger.info(f"gan: {GAN_MODEL} v{registration.version} face rate {quality.face_rate:.0%} "
                f"(untruncated {untruncated.face_rate:.0%}), landmark FD {quality.landmark_frechet:.1f}; "
                + ("now production" if registration.promoted else
                   f"production stays v{registration.previous_version} ({registration.previous_value:.0%})"))
    return {"model": GAN_MODEL, "version": registration.version, "promoted": registration.promoted,
            "steps": trainer.step_count, "epochs": len(reports), "seconds": round(seconds, 1), **final,
            "registration": dataclasses.asdict(registration), "run_id": tracker.run_id}
