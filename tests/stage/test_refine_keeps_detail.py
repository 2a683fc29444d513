"""`refine=true` never makes a sharp face worse: on a real 512² portrait, a refinement that blurs
the face or moves its landmarks is refused and the photo is kept, with the reason."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from tasks.identity.config import IdentityConfig
from tasks.identity.refine import judge_refinement, refine_or_keep
from tasks.reconstruct.landmarks import detect_faces
from tests.conftest import sample
from tests.unit.test_identity import _models

CONFIG = IdentityConfig()


def _landmarks(image):
    found = detect_faces(image, max_faces=1)
    return found[0] if found else None


@pytest.fixture(scope="module")
def portrait():
    path = sample("portraits", "sfhq_pt1_00000161.jpg")
    photo = np.asarray(Image.open(path).convert("RGB").resize((512, 512), Image.LANCZOS))
    return photo, _landmarks(photo)


def test_a_sharp_portrait_is_not_blurred_by_refine(portrait):
    photo, landmarks = portrait
    # A real refinement whose crop (16² here, 64² for the small preset) is pasted back onto a 512²
    # photo: the face comes back smooth, so the photo is kept.
    _, diffusion = _models()
    for parameter in diffusion.parameters():
        parameter.data.normal_(0, 0.05)
    image, result, verdict = refine_or_keep(photo, landmarks, diffusion, CONFIG.refine_strength,
                                            torch.Generator().manual_seed(0), _landmarks,
                                            CONFIG.refine_min_detail_ratio, CONFIG.refine_max_landmark_error)
    assert not np.array_equal(result.image, photo)  # the refiner did change the face
    assert not verdict.keep_refined and np.array_equal(image, photo)
    assert verdict.detail_ratio < 0.5 and "face detail fell" in verdict.reason
    record = verdict.as_record()
    assert record["kept"] == "photo" and record["detail_before"] > 100


def test_refinement_is_kept_only_with_the_photos_detail_and_landmarks(portrait):
    photo, landmarks = portrait
    same = judge_refinement(photo, photo, landmarks, _landmarks(photo), 0.8, 0.05)
    assert same.keep_refined and same.detail_ratio == pytest.approx(1.0) and same.landmark_error == 0.0
    blurred = np.asarray(Image.fromarray(photo).filter(ImageFilter.GaussianBlur(1.5)))
    soft = judge_refinement(photo, blurred, landmarks, _landmarks(blurred), 0.8, 0.05)
    assert not soft.keep_refined and "detail" in soft.reason
    moved = np.roll(photo, 16, axis=1)  # the same detail, another place: identity not kept
    shifted = judge_refinement(photo, moved, landmarks, _landmarks(moved), 0.8, 0.05)
    assert not shifted.keep_refined and "landmarks moved" in shifted.reason and shifted.detail_ratio > 0.8
    faceless = judge_refinement(photo, np.full_like(photo, 128), landmarks, None, 0.8, 0.05)
    assert not faceless.keep_refined and "no face found" in faceless.reason
