"""Named pipeline presets: the one registry deployments and the CLI pick settings from."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from stores.expectations import ManifestLimits
from tasks.animate.config import AnimationConfig
from tasks.capture.config import CaptureConfig
from tasks.identity.config import IdentityConfig
from tasks.ingest.config import IngestConfig
from tasks.reconstruct.config import ReconstructConfig
from tasks.render.config import RenderConfig
from tasks.style.config import StyleConfig


@dataclass(frozen=True)
class PipelineConfig:
    """Every stage's settings for one production run."""

    ingest: IngestConfig = field(default_factory=IngestConfig)
    """Decoding limits, speech synthesis and allowed input roots."""
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    """Generated faces (GAN draws, SDEdit, upscaling) and diffusion refinement of photos."""
    reconstruct: ReconstructConfig = field(default_factory=ReconstructConfig)
    """Face detection, crop and rig building."""
    style: StyleConfig = field(default_factory=StyleConfig)
    """Neural style transfer of the texture, for rows with a style."""
    animate: AnimationConfig = field(default_factory=AnimationConfig)
    """Visemes, coarticulation, blinks, head sway and gaze."""
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    """Driving-video tracking and its solve on the rig (weights, head pose, smoothing)."""
    render: RenderConfig = field(default_factory=RenderConfig)
    """Blender mode, engine settings and which files to write."""
    manifest: ManifestLimits = field(default_factory=ManifestLimits)
    """Bounds the manifest expectation suite enforces."""

    def with_input_roots(self, roots: tuple[str, ...]) -> "PipelineConfig":
        if not roots:
            return self
        ingest = dataclasses.replace(self.ingest, allowed_roots=tuple(self.ingest.allowed_roots) + tuple(roots))
        return dataclasses.replace(self, ingest=ingest)


PRESETS: dict[str, PipelineConfig] = {
    # Workbench over the photo: pixel-exact and faster than real time on 2 cores.
    "photo": PipelineConfig(),
    # Cycles with lights and a perspective camera; CUDA/OptiX where present.
    "lit": PipelineConfig(render=RenderConfig(mode="lit"), capture=CaptureConfig(translation_gain=1.0)),
    # Photo mode, MP4 and poster only: no GLB and no .blend, so the export task never runs.
    "preview": PipelineConfig(render=RenderConfig(write_glb=False, write_blend=False)),
}


def get_preset(name: str) -> PipelineConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_from_dict(cls: type, values: dict[str, Any]) -> Any:
    """Rebuild a (nested) frozen config dataclass from `config_to_dict`'s output or its JSON."""
    defaults = cls()  # every config field has a default; its type says how to rebuild the value
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in values.items():
        if name not in names:
            raise ValueError(f"{cls.__name__} has no field {name!r}")
        default = getattr(defaults, name)
        if dataclasses.is_dataclass(default):
            value = config_from_dict(type(default), value)
        elif isinstance(default, tuple) and isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        kwargs[name] = value
    return cls(**kwargs)


def config_json(config: Any) -> str:
    return json.dumps(config_to_dict(config), sort_keys=True)


@dataclass(frozen=True)
class TrainingConfig:
    """Every setting of one `avatarflow train` run: the dataset build, both generators and the
    style networks."""

    dataset: "DatasetConfig" = field(default_factory=lambda: _training_defaults()[0])
    """Which images are used and how faces are aligned, cropped and unwrapped."""
    gan: "GanConfig" = field(default_factory=lambda: _training_defaults()[1])
    """The StyleGAN2-style generator, its discriminator and its schedule."""
    diffusion: "DiffusionConfig" = field(default_factory=lambda: _training_defaults()[2])
    """The denoiser (SDEdit refinement) and the 2× upscaler, and their schedule."""
    style: "StyleNetworkConfig" = field(default_factory=lambda: _training_defaults()[3])
    """The feed-forward style networks, one per preset, and their promotion gates."""

    def with_overrides(self, overrides: dict[str, dict[str, Any]]) -> "TrainingConfig":
        """Replace single fields: {"gan": {"steps": 20}, "diffusion": {...}, "dataset": {...}, "style": {...}}."""
        unknown = set(overrides) - {"dataset", "gan", "diffusion", "style"}
        if unknown:
            raise ValueError(f"unknown training section(s) {sorted(unknown)}; use dataset, gan, diffusion or style")
        changed = {section: dataclasses.replace(getattr(self, section), **values)
                   for section, values in overrides.items()}
        return dataclasses.replace(self, **changed)


def _training_defaults():
    from tasks.dataset.config import DatasetConfig
    from tasks.diffusion.config import DIFFUSION_CONFIGS
    from tasks.gan.config import GAN_CONFIGS
    from tasks.style.config import StyleNetworkConfig

    return DatasetConfig(), GAN_CONFIGS["small"], DIFFUSION_CONFIGS["small"], StyleNetworkConfig()


def training_presets() -> dict[str, TrainingConfig]:
    """small (minutes on 2 CPU cores), base and large (GPU); torch loads only when asked for."""
    from tasks.dataset.config import DatasetConfig
    from tasks.diffusion.config import DIFFUSION_CONFIGS
    from tasks.gan.config import GAN_CONFIGS
    from tasks.style.config import StyleNetworkConfig

    # large upscales 128² samples to 256², so its dataset keeps 256² crops as well.
    datasets = {"small": DatasetConfig(), "base": DatasetConfig(), "large": DatasetConfig(crop_sizes=(64, 128, 256))}
    # Style networks: CPU-sized on small; on a GPU longer, wider, and at the optimisation path's
    # 256² working size where the dataset has 256² crops.
    styles = {"small": StyleNetworkConfig(),
              "base": StyleNetworkConfig(steps=2000, batch_size=8, channels=(32, 64, 128), residual_blocks=5),
              "large": StyleNetworkConfig(size=256, steps=4000, batch_size=8, channels=(32, 64, 128),
                                          residual_blocks=5, held_out=16)}
    return {name: TrainingConfig(dataset=datasets[name], gan=GAN_CONFIGS[name], diffusion=DIFFUSION_CONFIGS[name],
                                 style=styles[name])
            for name in ("small", "base", "large")}


def get_training_preset(name: str) -> TrainingConfig:
    presets = training_presets()
    if name not in presets:
        raise ValueError(f"unknown training config {name!r}; choose one of {', '.join(presets)}")
    return presets[name]
