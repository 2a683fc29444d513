"""The check a generated row's render must pass: MediaPipe finds a face on at least 95% of 50
frames spread over the clip (real H.264 files written with PyAV)."""

from __future__ import annotations

import av
import numpy as np
from PIL import Image

from tasks.quality.video_faces import check_video_faces, spread_indices
from tests.conftest import sample


def _write_video(path, frames):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_frames_are_spread_over_the_whole_clip():
    picked = spread_indices(300, 50)
    assert len(picked) == 50 and picked[0] == 0 and picked[-1] == 299
    assert np.all(np.diff(picked) >= 5)
    assert list(spread_indices(30, 50)) == list(range(30))  # a short clip: every frame


def test_a_face_on_too_few_frames_fails_the_check(tmp_path):
    face = np.asarray(Image.open(sample("portraits", "sfhq_pt1_00000161.jpg")).convert("RGB").resize((128, 128)))
    blank = np.full_like(face, 90)
    whole = check_video_faces(_write_video(tmp_path / "face.mp4", [face] * 100))
    assert whole.passed and (whole.frames, whole.checked, whole.with_face) == (100, 50, 50)
    # The face is gone from the last fifth of the clip: spread frames see it, the first 50 would not.
    fading = check_video_faces(_write_video(tmp_path / "fading.mp4", [face] * 80 + [blank] * 20))
    assert not fading.passed and fading.checked == 50 and 0.75 <= fading.share <= 0.85
    assert fading.as_record()["min_share"] == 0.95
