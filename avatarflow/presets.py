"""Named pipeline presets: the one registry deployments and the CLI pick settings from."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from stores.expectations import ManifestLimits
from tasks.animate.config import AnimationConfig
from tasks.ingest.config import IngestConfig
from tasks.reconstruct.config import ReconstructConfig
from tasks.render.config import RenderConfig


@dataclass(frozen=True)
class PipelineConfig:
    """Every stage's settings for one production run."""

    ingest: IngestConfig = field(default_factory=IngestConfig)
    """Decoding limits, speech synthesis and allowed input roots."""
    reconstruct: ReconstructConfig = field(default_factory=ReconstructConfig)
    """Face detection, crop and rig building."""
    animate: AnimationConfig = field(default_factory=AnimationConfig)
    """Visemes, coarticulation, blinks, head sway and gaze."""
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
    "lit": PipelineConfig(render=RenderConfig(mode="lit")),
    # Photo mode without the .blend, and keeping frames in the store, for dataset builds.
    "dataset": PipelineConfig(render=RenderConfig(write_blend=False, keep_frames=True)),
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
