"""Settings of the render stage: which engine renders the talk video and what else is written."""

from __future__ import annotations

from dataclasses import dataclass, field

from tasks.common.environment import number_from_environment

RENDER_MODES = ("photo", "lit")
CYCLES_DEVICES = ("auto", "cpu", "gpu")
TIMEOUT_VARIABLE = "AVATARFLOW_RENDER_TIMEOUT_SECONDS"
"""Environment variable: the default Blender job timeout, in seconds."""


def _default_timeout() -> float:
    return number_from_environment(TIMEOUT_VARIABLE, float, 1800.0, "a number of seconds")


JOBS_PER_BLENDER_VARIABLE = "AVATARFLOW_JOBS_PER_BLENDER"
"""Environment variable: the default number of jobs one Blender process takes before it is replaced."""


def default_jobs_per_blender() -> int:
    """AVATARFLOW_JOBS_PER_BLENDER, or 50."""
    return number_from_environment(JOBS_PER_BLENDER_VARIABLE, int, 50, "a whole number of jobs")


VIDEO_QUALITIES = ("LOSSLESS", "PERC_LOSSLESS", "HIGH", "MEDIUM", "LOW", "VERYLOW", "LOWEST")


@dataclass(frozen=True)
class RenderConfig:
    """How one avatar's rig and animation become a video, a poster, a GLB and a .blend."""

    mode: str = "photo"
    """"photo": Workbench, flat texture colour, orthographic camera over the photo; the still
    frame is pixel-exact to the portrait. "lit": Cycles, perspective camera, key/fill/rim lights."""

    cycles_samples: int = 16
    """Path-tracing samples per pixel in lit mode (adaptive sampling and denoising are off)."""

    cycles_device: str = "auto"
    """Lit-mode device: "cpu"; "gpu" (OptiX or CUDA, an error when neither exists);
    "auto" (a GPU when Cycles finds one, else the CPU)."""

    write_blend: bool = True
    """Save the scene, texture packed in, as a self-contained .blend."""

    write_glb: bool = True
    """Export a GLB with the textured mesh, the 52 morph targets and the animation."""

    keep_frames: bool = False
    """Also write every frame as a PNG (dataset mode); normally the MP4 is the only frame output."""

    timeout_seconds: float = field(default_factory=_default_timeout)
    """Wall-clock limit of one Blender job process (default 1800, or AVATARFLOW_RENDER_TIMEOUT_SECONDS);
    the job's process group is killed, and the render is tried once more before the row fails."""

    video_quality: str = "HIGH"
    """H.264 constant-rate quality as Blender names it (ffmpeg.constant_rate_factor):
    LOSSLESS, PERC_LOSSLESS, HIGH, MEDIUM, LOW, VERYLOW or LOWEST."""

    video_gop_size: int = 25
    """Frames between H.264 keyframes (one second at 25 fps, so seeking stays cheap)."""

    jobs_per_blender: int = field(default_factory=default_jobs_per_blender)
    """Jobs one long-lived Blender process per worker takes in turn before a fresh one replaces it
    (default 50, or AVATARFLOW_JOBS_PER_BLENDER); a failed, crashed or timed-out job replaces it
    at once. 1 runs every job in a fresh one-shot process (`blender_job.py --job`), for debugging."""

    def __post_init__(self) -> None:
        if self.mode not in RENDER_MODES:
            raise ValueError(f"render mode must be one of {RENDER_MODES}, got {self.mode!r}")
        if self.cycles_device not in CYCLES_DEVICES:
            raise ValueError(f"cycles_device must be one of {CYCLES_DEVICES}, got {self.cycles_device!r}")
        if self.video_quality not in VIDEO_QUALITIES:
            raise ValueError(f"video_quality must be one of {VIDEO_QUALITIES}, got {self.video_quality!r}")
        if self.cycles_samples < 1:
            raise ValueError(f"cycles_samples must be >= 1, got {self.cycles_samples}")
        if self.timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be > 0, got {self.timeout_seconds}")
        if self.video_gop_size < 1:
            raise ValueError(f"video_gop_size must be >= 1, got {self.video_gop_size}")
        if self.jobs_per_blender < 1:
            raise ValueError(f"jobs_per_blender must be >= 1, got {self.jobs_per_blender}")
