"""The identity stage's draw loop and photo refinement, with tiny untrained networks."""

from __future__ import annotations

import numpy as np
import torch

from tasks.diffusion.bundle import DiffusionBundle
from tasks.diffusion.unet import build_denoiser, build_upscaler
from tasks.gan.networks import Generator
from tasks.identity.generate import draw_seed, generate_identity
from tasks.identity.refine import face_mask, refine_photo
from tests.unit.test_model_registry import TINY_DIFFUSION, TINY_GAN


def _models():
    torch.manual_seed(0)
    return Generator(TINY_GAN).eval(), DiffusionBundle(build_denoiser(TINY_DIFFUSION), build_upscaler(TINY_DIFFUSION),
                                                       TINY_DIFFUSION).eval()


def test_draw_seeds_are_derived_deterministically():
    assert draw_seed(42, 0) == 42
    derived = [draw_seed(42, n) for n in range(1, 6)]
    assert derived == [draw_seed(42, n) for n in range(1, 6)] and len(set(derived)) == 5
    assert all(0 <= s < 2 ** 31 for s in derived) and draw_seed(43, 1) != derived[0]


def test_generate_draws_until_a_face_is_found_and_records_the_draws():
    generator, diffusion = _models()
    answers = iter([False, False, True])
    result = generate_identity(7, generator, diffusion, 0.7, 0.3, max_draws=5, portrait_side=128,
                               has_face=lambda image: next(answers))
    assert [d.face_found for d in result.draws] == [False, False, True]
    assert [d.latent_seed for d in result.draws] == [draw_seed(7, n) for n in range(3)]
    assert result.portrait.shape == (128, 128, 3) and result.portrait.dtype == np.uint8
    assert result.latent.shape == (TINY_GAN.z_dim,) and result.diffusion_noise.shape == (3, 8, 8)
    again = generate_identity(7, generator, diffusion, 0.7, 0.3, max_draws=5, portrait_side=128,
                              has_face=lambda image: True)
    first_draw_only = generate_identity(draw_seed(7, 2), generator, diffusion, 0.7, 0.3, max_draws=1,
                                        portrait_side=128, has_face=lambda image: True)
    assert np.array_equal(result.portrait, first_draw_only.portrait)  # a draw depends on its seed only
    assert not np.array_equal(again.portrait, result.portrait)


def test_generate_gives_up_after_the_bound():
    generator, diffusion = _models()
    failed = generate_identity(7, generator, diffusion, 0.7, 0.3, max_draws=3, portrait_side=128,
                               has_face=lambda image: False)
    assert isinstance(failed, list) and len(failed) == 3 and not any(d.face_found for d in failed)


def test_refine_photo_changes_the_face_only():
    _, diffusion = _models()
    for parameter in diffusion.parameters():
        parameter.data.normal_(0, 0.05)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (120, 100, 3), dtype=np.uint8)
    # A fake face of 478 landmarks: the alignment template shrunk into the image's centre.
    from tasks.dataset.align import alignment_template
    landmarks = alignment_template(16) * 2.0 + np.array([34.0, 44.0])
    refined = refine_photo(image, landmarks, diffusion, 0.5, torch.Generator().manual_seed(0))
    assert refined.image.shape == image.shape and refined.crop_after.shape == (16, 16, 3)
    changed = np.abs(refined.image.astype(int) - image).sum(axis=2) > 0
    assert changed[44:76, 34:66].mean() > 0.3  # the face region moved
    assert not changed[:20].any() and not changed[-20:].any()  # far from the face nothing did
    mask = face_mask(32)
    assert mask.max() > 0.99 and mask[0, 0] < 0.01
