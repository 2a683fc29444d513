"""Identity tasks: `generate:<seed>` rows get a new face from the production GAN and diffusion
models; `refine=true` rows get their photo's face refined. Both write the portrait the reconstruct
stage reads, and record the model versions and seeds they used."""

from __future__ import annotations

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from stores.avatar_store import StageRef
from stores.model_registry import DIFFUSION_MODEL, GAN_MODEL
from tasks.common.errors import AvatarInputError
from tasks.common.rows import AvatarRow
from tasks.common.stage_task import run_stage
from tasks.identity.config import IdentityConfig
from tasks.identity.models import production_model
from tasks.reconstruct.landmarks import detect_faces

@task(name="generate", cache_policy=NO_CACHE, persist_result=False)
def generate_avatar_identity(ingested: StageRef, row: AvatarRow, data_dir: str, config: IdentityConfig):
    run = ingested.run

    def compute(store):
        from tasks.common.torch_utils import resolve_device  # torch loads on the worker, not in the flow process
        from tasks.identity.generate import generate_identity

        device = str(resolve_device(config.device))
        generator, gan_version = production_model(data_dir, GAN_MODEL, device)
        diffusion, diffusion_version = production_model(data_dir, DIFFUSION_MODEL, device)
        truncation = config.truncation or generator.config.truncation
        result = generate_identity(row.generate_seed, generator, diffusion, truncation, config.generate_strength,
                                   config.max_draws, config.portrait_side,
                                   has_face=lambda image: bool(detect_faces(image, max_faces=1)),
                                   upscale_strength=config.upscale_strength)
        models = {GAN_MODEL: gan_version, DIFFUSION_MODEL: diffusion_version}
        if isinstance(result, list):
            raise AvatarInputError(
                f"no face found in {len(result)} generated draws from seed {row.generate_seed} "
                f"(latent seeds {[d.latent_seed for d in result]}); try another seed or a better-trained model",
                record={"draws": [d.__dict__ for d in result], "models": models})
        draws = [d.__dict__ for d in result.draws]
        write = lambda name, array, **attrs: store.write(run, row.id, name, array, attrs=attrs)  # noqa: E731
        arrays = {
            "portrait": write("generated/portrait", result.portrait, source=row.identity, models=models),
            "gan_sample": write("generated/gan_sample", result.gan_sample),
            "latent_gan": write("latents/gan", result.latent[None], draws=draws, truncation=truncation,
                                model=f"{GAN_MODEL}/{gan_version}"),
            "latent_diffusion": write("latents/diffusion", result.diffusion_noise[None],
                                      trajectory_seeds=[draws[-1]["latent_seed"]],
                                      strength=config.generate_strength, model=f"{DIFFUSION_MODEL}/{diffusion_version}"),
        }
        warnings = [] if len(draws) == 1 else [f"{len(draws) - 1} draw(s) without a face before the accepted one"]
        return arrays, {"warnings": warnings, "record": {"draws": draws, "models": models}}

    return run_stage("generate", ingested.store_url, run, row.id, compute)


@task(name="refine", cache_policy=NO_CACHE, persist_result=False)
def refine_avatar_portrait(ingested: StageRef, row: AvatarRow, data_dir: str, config: IdentityConfig):
    run = ingested.run

    def compute(store):
        from tasks.common.torch_utils import resolve_device  # torch loads on the worker, not in the flow process
        from tasks.identity.refine import refine_or_keep

        device = str(resolve_device(config.device))
        diffusion, version = production_model(data_dir, DIFFUSION_MODEL, device)
        image = store.read(run, row.id, ingested.arrays["portrait"].name)
        faces = detect_faces(image, max_faces=1)
        if not faces:
            raise AvatarInputError("no face found in the portrait to refine")
        trajectory_seed = row.seed

        def landmarks_of(candidate):
            found = detect_faces(candidate, max_faces=1)
            return found[0] if found else None

        portrait, result, verdict = refine_or_keep(
            image, faces[0], diffusion, config.refine_strength, _seeded_generator(trajectory_seed),
            landmarks_of, config.refine_min_detail_ratio, config.refine_max_landmark_error)
        models = {DIFFUSION_MODEL: version}
        arrays = {
            "portrait": store.write(run, row.id, "refined/portrait", portrait,
                                    attrs={"models": models, "kept": verdict.as_record()["kept"]}),
            "crop_before": store.write(run, row.id, "refined/crop_before", result.crop_before),
            "crop_after": store.write(run, row.id, "refined/crop_after", result.crop_after),
            "latent_diffusion": store.write(run, row.id, "latents/diffusion", result.noise[None],
                                            attrs={"trajectory_seeds": [trajectory_seed],
                                                   "strength": config.refine_strength,
                                                   "model": f"{DIFFUSION_MODEL}/{version}"}),
        }
        change = float(np.abs(result.crop_after.astype(np.int16) - result.crop_before).mean())
        # A refinement that loses detail or moves the landmarks is not used: the row goes on with the photo.
        warnings = [] if verdict.keep_refined else [f"refine: {verdict.reason}"]
        return arrays, {"warnings": warnings, "record": {"models": models, "mean_abs_change": round(change, 2),
                                                         "verdict": verdict.as_record()}}

    return run_stage("refine", ingested.store_url, run, row.id, compute)


def _seeded_generator(seed: int):
    """A CPU torch generator; torch is imported on first use, so importing the flow stays fast."""
    import torch

    return torch.Generator(device="cpu").manual_seed(seed)

