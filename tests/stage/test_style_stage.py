"""Style transfer of a real portrait with every preset: stylised, yet MediaPipe still finds the face."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.style.config import StyleConfig
from tasks.style.metrics import content_landmark_error
from tasks.style.presets import STYLE_PRESETS, resolve_style
from tasks.style.transfer import stylise
from tests.conftest import sample

SIDE = 256


@pytest.fixture(scope="module")
def portrait():
    path = sample("portraits", "sfhq_pt1_00000058.jpg")
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize((SIDE, SIDE), Image.BICUBIC))


@pytest.mark.parametrize("preset", sorted(STYLE_PRESETS))
def test_preset_stylises_and_keeps_the_face(portrait, preset):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # Fewer steps than the default keep the test short; the default only goes further.
        result = stylise(portrait, resolve_style(preset)[1], replace(StyleConfig(device="cpu"), steps=40), seed=0)
    finally:
        torch.set_num_threads(threads)
    assert result.image.shape == portrait.shape
    assert result.gram_loss_after < 0.5 * result.gram_loss_before
    assert np.abs(result.image.astype(float) - portrait).mean() > 15.0
    error = content_landmark_error(portrait, result.image)
    assert error is not None and error < 0.15


def test_landmark_error_is_zero_on_the_same_image_and_inf_without_a_face(portrait):
    assert content_landmark_error(portrait, portrait) == pytest.approx(0.0, abs=1e-6)
    assert content_landmark_error(portrait, np.full_like(portrait, 128)) == float("inf")
    assert content_landmark_error(np.full_like(portrait, 128), portrait) is None
