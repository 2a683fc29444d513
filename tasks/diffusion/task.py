"""Diffusion training task: dataset crops → denoiser (SDEdit at the GAN's size) and 2× upscaler,
checkpointed, logged to MLflow with losses and refinement / super-resolution metrics, and
registered together as avatarflow-diffusion. The version is promoted only if it passes the
promotion gates: both networks trained all their steps, and the upscaler beats bicubic."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
import torch.nn.functional as F
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from stores.dataset_store import DatasetStore
from stores.model_registry import DIFFUSION_MODEL, register_model
from stores.tracking import RunTracker
from tasks.common.torch_utils import resolve_device, to_tensor_images, to_uint8_images
from tasks.common.training_io import (checkpoint_path, flat_params, load_checkpoint, log_image, save_checkpoint,
                                      use_threads)
from tasks.dataset.task import DatasetRef, reference_shapes
from tasks.diffusion.bundle import DiffusionBundle
from tasks.diffusion.config import DiffusionConfig
from tasks.diffusion.sampling import upsample_condition
from tasks.diffusion.training import DiffusionTrainer, fit, make_sr_pair, random_batch, random_crop
from tasks.diffusion.unet import build_denoiser, build_upscaler
from tasks.quality.gates import psnr_gate, training_length_gate
from tasks.quality.grid import image_grid
from tasks.quality.metrics import evaluate_faces

HELD_OUT = 32
"""Dataset faces kept out of training and used for the metrics."""
EPOCHS_PER_NETWORK = 4
"""Logging and checkpoint points per network over its step budget."""


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio of two [-1, 1] image batches, in dB."""
    mse = float(((a - b) / 2).square().mean())
    return 10.0 * np.log10(1.0 / max(mse, 1e-12))


@torch.no_grad()
def evaluate_bundle(bundle: DiffusionBundle, low: torch.Tensor, high: torch.Tensor, reference: np.ndarray,
                    seed: int) -> tuple[dict[str, float], np.ndarray]:
    """SDEdit face rate and landmark FD on held-out faces, and 2× super-resolution PSNR against
    the real high-res crops (with bicubic upsampling as the baseline)."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    refined, _ = bundle.refine(low, bundle.config.sdedit_strength, generator)
    upscaled = bundle.upscale(low, generator)
    quality = evaluate_faces(to_uint8_images(bundle.upscale(refined, generator)), reference)
    metrics = {"sdedit_face_rate": quality.face_rate, "sdedit_landmark_frechet": quality.landmark_frechet,
               "sr_psnr_db": psnr_db(upscaled, high),
               "bicubic_psnr_db": psnr_db(upsample_condition(low, bundle.config.upscale), high)}
    side = high.shape[-1]
    row = torch.cat([F.interpolate(low, size=side, mode="nearest"), upscaled, high])
    return metrics, image_grid(to_uint8_images(row), columns=low.shape[0])


@task(name="train-diffusion", cache_policy=NO_CACHE, persist_result=False)
def train_diffusion_model(dataset: DatasetRef, data_dir: str, config: DiffusionConfig, device: str = "auto",
                          threads: int | None = None, resume: bool = True) -> dict:
    logger = get_run_logger()
    threads = use_threads(threads)
    torch_device = resolve_device(device)
    store = DatasetStore(dataset.store_url)
    high_side = config.resolution * config.upscale
    low_images = to_tensor_images(store.read_crops_at(dataset.name, config.resolution))
    high_images = to_tensor_images(store.read_crops_at(dataset.name, high_side))
    held = max(1, min(HELD_OUT, len(low_images) // 5))
    order = torch.randperm(len(low_images), generator=torch.Generator().manual_seed(config.seed))
    test, train = order[:held], order[held:] if len(order) > held else order
    reference = reference_shapes(store, dataset.name)

    torch.manual_seed(config.seed)
    denoiser = DiffusionTrainer.from_config(build_denoiser(config).to(torch_device), config)
    upscaler = DiffusionTrainer.from_config(build_upscaler(config).to(torch_device), config)
    checkpoint = checkpoint_path(data_dir, "diffusion", dataset.fingerprint, config)
    state = load_checkpoint(checkpoint) if resume else None
    if state is not None:
        denoiser.load_state_dict(state["denoiser"])
        upscaler.load_state_dict(state["upscaler"])
        logger.info(f"diffusion: resuming from steps {denoiser.step_count}/{upscaler.step_count} ({checkpoint})")
    data_random = torch.Generator().manual_seed(config.seed + 1)
    train_low, train_high = low_images[train].to(torch_device), high_images[train].to(torch_device)

    def low_batch():
        return random_batch(train_low, config.batch_size, data_random), None

    def high_batch():
        target, cond = make_sr_pair(random_batch(train_high, config.batch_size, data_random), config.upscale,
                                    config.residual_scale)
        crop = min(config.upscaler_crop, high_side)
        return random_crop((target, cond), crop, data_random, multiple=2 ** (len(config.channel_mults) - 1))

    with RunTracker(data_dir, "avatarflow-train", f"diffusion-{dataset.name}",
                    tags={"model": DIFFUSION_MODEL, "dataset": dataset.fingerprint}) as tracker:
        tracker.log_params({**flat_params("diffusion", config), "device": str(torch_device), "threads": threads,
                            "dataset.images": dataset.n_images, "held_out": held,
                            "resumed_from_steps": f"{denoiser.step_count}/{upscaler.step_count}"})
        started = time.perf_counter()
        bundle = DiffusionBundle(denoiser.ema, upscaler.ema, config).to(torch_device)
        low_test, high_test = low_images[test][:8].to(torch_device), high_images[test][:8].to(torch_device)
        results = {}
        # 1. Each network in turn, in EPOCHS_PER_NETWORK legs with a log and checkpoint after each.
        for name, trainer, batches in (("denoiser", denoiser, low_batch), ("upscaler", upscaler, high_batch)):
            leg_seconds = config.max_seconds / EPOCHS_PER_NETWORK
            for leg in range(1, EPOCHS_PER_NETWORK + 1):
                target = -(-config.steps * leg // EPOCHS_PER_NETWORK)
                if trainer.step_count >= target:
                    continue
                result = fit(trainer, batches, target, leg_seconds)
                metrics, grid = evaluate_bundle(bundle, low_test, high_test, reference, config.seed)
                tracker.log_metrics({f"{name}_loss": result.mean_loss, **metrics,
                                     f"{name}_steps_per_second": (result.steps and result.steps / max(result.seconds, 1e-9))},
                                    step=denoiser.step_count + upscaler.step_count)
                log_image(tracker, grid, "samples", f"{name}_step{trainer.step_count:07d}.png")
                save_checkpoint(checkpoint, {"denoiser": denoiser.state_dict(), "upscaler": upscaler.state_dict()})
                logger.info(f"diffusion: {name} step {trainer.step_count}/{config.steps}, loss {result.mean_loss:.4f}, "
                            f"SR {metrics['sr_psnr_db']:.2f} dB (bicubic {metrics['bicubic_psnr_db']:.2f}), "
                            f"SDEdit faces {metrics['sdedit_face_rate']:.0%}")
            results[name] = trainer.step_count
        seconds = time.perf_counter() - started
        # 2. How training ended: a wall-clock cap that cut either network short blocks promotion.
        steps_done = min(denoiser.step_count, upscaler.step_count)
        stopped_by = "steps" if steps_done >= config.steps else "time"
        tracker.log_params({"stopped_by": stopped_by, "steps_done": f"{denoiser.step_count}/{upscaler.step_count}",
                            "steps_target": config.steps})
        # 3. Registration metrics on every held-out face.
        metrics, grid = evaluate_bundle(bundle, low_images[test].to(torch_device), high_images[test].to(torch_device),
                                        reference, config.seed)
        final = {f"final_{k}": v for k, v in metrics.items()}
        tracker.log_metrics({**final, "train_seconds": seconds}, step=denoiser.step_count + upscaler.step_count)
        log_image(tracker, grid, "samples", "final_super_resolution.png")
        gates = [training_length_gate(steps_done, config.steps),
                 psnr_gate(metrics["sr_psnr_db"], metrics["bicubic_psnr_db"], config.gate_psnr_margin_db)]
        tracker.log_dict({"gates": [gate.as_dict() for gate in gates]}, "gates.json")
        registration = register_model(data_dir, bundle, DIFFUSION_MODEL, "sr_psnr_db", metrics["sr_psnr_db"],
                                      higher_is_better=True, gates=gates,
                                      tags={"stopped_by": stopped_by, "steps_target": str(config.steps),
                                            "steps_done": f"{denoiser.step_count}/{upscaler.step_count}",
                                            "bicubic_psnr_db": f"{metrics['bicubic_psnr_db']:.6g}"})
        tracker.log_params({"registered_version": registration.version, "promoted": registration.promoted,
                            "failed_gates": ",".join(registration.failed_gates) or "none"})
    logger.info(f"diffusion: {DIFFUSION_MODEL} v{registration.version}: SR {metrics['sr_psnr_db']:.2f} dB "
                f"(bicubic {metrics['bicubic_psnr_db']:.2f}), SDEdit faces {metrics['sdedit_face_rate']:.0%}, "
                f"steps {denoiser.step_count}/{upscaler.step_count} of {config.steps}; "
                + ("now production" if registration.promoted else f"not promoted: {registration.reason}"))
    return {"model": DIFFUSION_MODEL, "version": registration.version, "promoted": registration.promoted,
            "steps": results, "stopped_by": stopped_by, "seconds": round(seconds, 1), **final,
            "gates": [gate.as_dict() for gate in gates],
            "registration": dataclasses.asdict(registration), "run_id": tracker.run_id}
