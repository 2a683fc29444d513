"""How often the production generators give a face, judged by MediaPipe: for N seeds, the share of
raw GAN samples, of full identity draws (GAN → SDEdit → 2× upscale → portrait) and of rows that
find a face within the draw bound, plus the landmark Fréchet distance to the training faces, the
identity spread beside the training faces' own, and the baselines: the mean face's distance,
training faces shrunk to the GAN's side (the best a generator of that side can score), and
nearest-training-face distances.

    .venv/bin/python bench/generation_quality.py --data-dir avatarflow-data [--seeds 200] [--device auto]
        [--gan-version N] [--diffusion-version N]   # registered versions the gates did not promote

Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stores.dataset_store import DatasetStore  # noqa: E402
from stores.model_registry import (DIFFUSION_MODEL, GAN_MODEL, load_model_version,  # noqa: E402
                                   load_production_model)
from tasks.common.torch_utils import resolve_device, to_uint8_images  # noqa: E402
from tasks.gan.sampling import generate_faces, latent_for_seed  # noqa: E402
from tasks.dataset.task import reference_shapes  # noqa: E402
from tasks.identity.config import IdentityConfig  # noqa: E402
from tasks.identity.generate import generate_identity  # noqa: E402
from tasks.quality.gates import (mean_face_frechet, sample_nn_distances, training_nn_distances,  # noqa: E402
                                 training_pool)
from tasks.quality.metrics import (detect_landmarks, evaluate_faces, identity_spread, landmark_frechet,  # noqa: E402
                                   normalised_shape, reference_spread)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="avatarflow-data")
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--generate-strength", type=float, help="SDEdit strength (default: the pipeline's)")
    parser.add_argument("--gan-version", type=int, help="score this registered GAN version (default: production)")
    parser.add_argument("--diffusion-version", type=int, help="this registered diffusion version (default: production)")
    parser.add_argument("--upscale-strength", type=float, help="upscaler strength (default: the model's)")
    args = parser.parse_args()
    device = str(resolve_device(args.device))

    def load(name: str, version: int | None):
        if version is None:
            return load_production_model(args.data_dir, name, device)
        return load_model_version(args.data_dir, name, version, device), version

    generator, gan_version = load(GAN_MODEL, args.gan_version)
    diffusion, diffusion_version = load(DIFFUSION_MODEL, args.diffusion_version)
    config = IdentityConfig(generate_strength=IdentityConfig().generate_strength if args.generate_strength is None
                            else args.generate_strength, upscale_strength=args.upscale_strength)
    truncation = config.truncation or generator.config.truncation
    dataset = DatasetStore(str(Path(args.data_dir).resolve() / "datasets.zarr"))
    reference = reference_shapes(dataset, "faces")
    seeds = list(range(1, args.seeds + 1))

    # 1. Raw GAN samples at the production truncation and untruncated.
    raw = {}
    for psi in (truncation, 1.0):
        latents = np.stack([latent_for_seed(seed, generator.z_dim) for seed in seeds])
        images = np.concatenate([to_uint8_images(generate_faces(generator, latents[i:i + 1], psi, seed))
                                 for i, seed in enumerate(seeds)])
        raw[psi] = evaluate_faces(images, reference)

    # 2. The gates' baselines: the mean training face's FD, and how close samples come to training faces.
    crops = dataset.read_crops_at("faces", generator.resolution)
    mean_face_fd, _ = mean_face_frechet(crops, reference)
    # The ceiling at the GAN's resolution: as many training faces, shrunk to it and scored alike.
    chosen = np.random.default_rng(0).choice(len(crops), size=min(len(seeds), len(crops)), replace=False)
    training_at_gan_side = evaluate_faces(crops[np.sort(chosen)], reference)
    pool = training_pool(crops)
    samples = np.concatenate([to_uint8_images(generate_faces(generator, latents[i:i + 1], truncation, seed))
                              for i, seed in enumerate(seeds)])
    sample_nn, training_nn = sample_nn_distances(samples, pool), training_nn_distances(pool)

    # 3. Full identity draws, as produce makes them: first draw and within the bound.
    first_draw_faces, rows_with_face, portraits, seconds = 0, 0, [], []
    for seed in seeds:
        started = time.perf_counter()
        result = generate_identity(seed, generator, diffusion, truncation, config.generate_strength,
                                   config.max_draws, config.portrait_side,
                                   has_face=lambda image: detect_landmarks(image[None], upscale_to=image.shape[0])[0] is not None,
                                   upscale_strength=config.upscale_strength)
        seconds.append(time.perf_counter() - started)
        if not isinstance(result, list):
            rows_with_face += 1
            first_draw_faces += result.draws[0].face_found
            portraits.append(np.asarray(Image.fromarray(result.portrait).resize((256, 256), Image.BICUBIC)))
    landmarks = [lm for lm in detect_landmarks(np.stack(portraits), upscale_to=256) if lm is not None] if portraits else []
    portrait_shapes = np.stack([normalised_shape(lm) for lm in landmarks]) if len(landmarks) >= 2 else None
    frechet = landmark_frechet(portrait_shapes, reference) if portrait_shapes is not None else float("nan")
    report = {
        "models": {GAN_MODEL: gan_version, DIFFUSION_MODEL: diffusion_version}, "seeds": len(seeds),
        "truncation": truncation, "generate_strength": config.generate_strength,
        "upscale_strength": config.upscale_strength or diffusion.config.sr_strength,
        "gan_face_rate": raw[truncation].face_rate, "gan_landmark_frechet": raw[truncation].landmark_frechet,
        "gan_face_rate_untruncated": raw[1.0].face_rate,
        "mean_face_landmark_frechet": mean_face_fd,
        "training_faces_at_gan_side_frechet": training_at_gan_side.landmark_frechet,
        "gan_nn_distance_median_ratio": float(np.median(sample_nn) / np.median(training_nn)),
        "gan_landmark_frechet_untruncated": raw[1.0].landmark_frechet,
        # The spread gate's figures: samples against as many training faces.
        "gan_identity_spread": raw[truncation].identity_spread,
        "training_identity_spread": reference_spread(reference, raw[truncation].n_faces),
        "portrait_identity_spread": identity_spread(portrait_shapes) if portrait_shapes is not None else float("nan"),
        "training_identity_spread_portraits": reference_spread(reference, len(landmarks)),
        "draw_face_rate_first": first_draw_faces / len(seeds),
        "rows_with_face_within_bound": rows_with_face / len(seeds),
        "portrait_landmark_frechet": frechet,
        "seconds_per_row": float(np.mean(seconds)),
    }
    for key, value in report.items():
        print(f"{key:34s} {value:.4g}" if isinstance(value, float) else f"{key:34s} {value}")
    print(json.dumps(report))


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
