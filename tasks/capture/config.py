"""Settings of the capture stage: video limits, face tracking, the rig solve and its smoothing."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CaptureConfig:
    """How a driving video becomes per-frame ARKit weights and head pose on a row's rig."""

    max_video_bytes: int = 1024 * 1024 * 1024
    """Largest accepted video file in bytes (a video's length limit is the audio limit of ingest)."""

    max_frame_pixels: int = 4096 * 2304
    """Largest accepted frame (width × height), read from the stream header before decoding."""

    max_fps: float = 240.0
    """Frames per second above which a video is refused; bounds the frames decoded for its length."""

    track_max_side: int = 1280
    """Frames with a longer side are scaled down to this size for tracking (landmarks are reported
    in the video's own pixels all the same)."""

    min_detection_confidence: float = 0.5
    """MediaPipe face-detector score below which no face is reported."""

    min_tracking_confidence: float = 0.5
    """MediaPipe tracking score below which the face is detected afresh on the next frame."""

    min_face_fraction: float = 0.25
    """A video in which a face is found on a smaller share of frames is refused."""

    blur_ratio: float = 0.35
    """A frame whose face sharpness (variance of the Laplacian) is below this fraction of the
    clip's median is dropped as motion-blurred and bridged from its neighbours."""

    z_weight: float = 0.5
    """Weight of the depth coordinate in the solve; MediaPipe's z is noisier than x and y."""

    eyelid_weight: float = 3.0
    """Weight of the eye-contour landmarks in the solve (blinks move few points, but they show)."""

    lip_weight: float = 2.0
    """Weight of the lip landmarks in the solve."""

    iris_weight: float = 0.5
    """Weight of the iris landmarks in the solve; they drop with the upper lid on a blink."""

    ridge: float = 5e-2
    """Tikhonov term of the blendshape solve, relative to each shape's squared delta norm; it settles
    shapes that move landmarks alike (smile / stretch) instead of letting them trade places."""

    solver_iterations: int = 150
    """Sweeps of the projected coordinate-descent solver over the 52 weights."""

    rest_percentile: float = 10.0
    """The performer's rest face is the mean of their open-eyed frames whose inner-lip gap lies at
    or below this percentile. It is subtracted, so an asymmetric or smiling face at rest drives the
    avatar's own neutral face."""

    closed_lid_gap: float = 0.04
    """Lid gap, in eye widths, that MediaPipe reads on a real shut eye (0.02–0.06, never 0): a
    performer's eye closed that far drives a full blink."""

    rotation_gain: float = 1.0
    """Multiplier on the captured head rotation (below 1 in photo mode keeps a large turn from
    tearing the face away from the photo's hair)."""

    translation_gain: float = 0.5
    """Multiplier on the captured head translation in the image plane. Below 1 in photo mode, where
    the face slides over a photo whose hair and ears stay put; the lit preset uses 1."""

    weights_min_cutoff_hz: float = 5.0
    """One-Euro filter on the weights: cutoff (Hz) while a weight is still."""

    weights_beta: float = 4.0
    """One-Euro filter on the weights: how fast the cutoff rises with speed (keeps blinks and lip
    closures sharp)."""

    pose_min_cutoff_hz: float = 5.0
    """One-Euro filter on the head pose: cutoff (Hz) while the head is still."""

    pose_beta: float = 2.0
    """One-Euro filter on the head pose: how fast the cutoff rises with angular speed (rad/s)."""

    derivative_cutoff_hz: float = 3.0
    """One-Euro filter: cutoff (Hz) of the speed estimate that drives the adaptive cutoff."""

    def __post_init__(self) -> None:
        if not 0.0 < self.min_face_fraction <= 1.0:
            raise ValueError(f"min_face_fraction must lie in (0, 1], got {self.min_face_fraction}")
        if not 0.0 < self.rest_percentile <= 50.0:
            raise ValueError(f"rest_percentile must lie in (0, 50], got {self.rest_percentile}")
        if self.track_max_side < 64:
            raise ValueError(f"track_max_side must be at least 64, got {self.track_max_side}")
        if not 0.0 <= self.closed_lid_gap < 0.2:
            raise ValueError(f"closed_lid_gap must lie in [0, 0.2), got {self.closed_lid_gap}")
        if self.solver_iterations < 1:
            raise ValueError(f"solver_iterations must be at least 1, got {self.solver_iterations}")
