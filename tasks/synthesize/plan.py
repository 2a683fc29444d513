"""Who is in a data set, how its samples are cut into shards, and where it is written: bookkeeping,
no rendering (and no Prefect: the command plans before its server starts)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np

from stores.location import DataLocation
from tasks.common.errors import AvatarInputError

if TYPE_CHECKING:
    from tasks.synthesize.config import SynthesisConfig

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Identity:
    index: int
    """Position in the data set; identity k owns samples k*M .. k*M+M-1."""
    name: str
    portrait: str | None
    """The portrait file the face is reconstructed from, or None for a generated face."""
    split: str
    generate_seed: int | None = None
    """The production GAN's seed for a generated face: the face a manifest row `generate:<seed>` gets."""

    @property
    def source(self) -> str:
        return self.portrait if self.portrait is not None else f"generate:{self.generate_seed}"


@dataclass(frozen=True)
class Shard:
    index: int
    start: int
    """The first sample index; the shard's samples are contiguous."""
    identities: tuple[Identity, ...]
    samples_per_identity: int

    @property
    def n_samples(self) -> int:
        return len(self.identities) * self.samples_per_identity

    def sample_names(self, identity: Identity) -> list[str]:
        return [f"{identity.name}_{j:04d}" for j in range(self.samples_per_identity)]


def portraits_in(folder: str | os.PathLike, count: int | None, option: str = "--portraits") -> list[str]:
    """The image files of a folder (a path or an fsspec URL) in name order, as absolute paths or
    URLs: the first `count`, or all of them."""
    location = DataLocation(folder)
    try:
        is_folder = location.fs.isdir(location.fs_path)
    except ValueError as error:  # an unknown protocol or a missing filesystem package
        raise AvatarInputError(f"{option} {folder}: {error}") from None
    if not is_folder:
        raise AvatarInputError(f"{option} {folder} is not a folder")
    names = sorted(PurePosixPath(entry).name for entry in location.fs.ls(location.fs_path, detail=False))
    found = [location.join(name).url for name in names if PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES]
    if not found:
        raise AvatarInputError(f"{option} {folder} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    if count is not None and count > len(found):
        raise AvatarInputError(f"--identities {count} asks for more faces than the {len(found)} images in {folder}")
    return found[:count] if count is not None else found


def assign_splits(n_identities: int, shares: tuple[float, float, float], seed: int) -> list[str]:
    """A split per identity, from a seeded shuffle: the first shares of the shuffled order go to
    train, val and test (counts rounded, so a small set may leave val or test empty)."""
    order = np.random.default_rng([seed, 2**31 - 1]).permutation(n_identities)
    bounds = np.round(np.cumsum(shares) * n_identities).astype(int)
    splits = [""] * n_identities
    for rank, identity in enumerate(order):
        splits[identity] = SPLITS[int(np.searchsorted(bounds, rank, side="right"))]
    return splits


def plan_identities(portraits: list[str], shares: tuple[float, float, float], seed: int) -> list[Identity]:
    splits = assign_splits(len(portraits), shares, seed)
    return [Identity(index=k, name=f"id{k:05d}", portrait=str(path), split=splits[k])
            for k, path in enumerate(portraits)]


def plan_shards(identities: list[Identity], samples_per_identity: int, samples_per_shard: int) -> list[Shard]:
    """Shards of whole identities, as many as fit in `samples_per_shard` (at least one each)."""
    per_shard = max(1, samples_per_shard // samples_per_identity)
    return [Shard(index=k, start=first * samples_per_identity, identities=tuple(identities[first:first + per_shard]),
                  samples_per_identity=samples_per_identity)
            for k, first in enumerate(range(0, len(identities), per_shard))]


def plan_generated_identities(count: int, shares: tuple[float, float, float], seed: int) -> list[Identity]:
    """`count` faces of the production GAN: identity k is `generate:<seed + k>`."""
    splits = assign_splits(count, shares, seed)
    return [Identity(index=k, name=f"id{k:05d}", portrait=None, split=splits[k], generate_seed=seed + k)
            for k in range(count)]


def plan_data_set(portraits: str | None, identities: int | None, samples_per_identity: int, seed: int,
                  config: "SynthesisConfig", models: dict[str, int] | None = None, backgrounds: str | None = None,
                  shape_model: dict | None = None) -> tuple[list[Identity], list[Shard], dict]:
    """The identities (a folder's portraits, or without one `identities` GAN faces of the production
    `models`), their shards, and the settings a resumed run must share (the background images are
    in them as `backgrounds`, full paths, and the training faces the shape model is fitted to as
    `shape_model`)."""
    background_images = portraits_in(backgrounds, None, "--backgrounds") if backgrounds else []
    if identities is not None and identities < 1:
        raise AvatarInputError("--identities must be at least 1")
    if portraits is not None:
        faces = plan_identities(portraits_in(portraits, identities), config.split, seed)
    elif identities is None or identities < 1:
        raise AvatarInputError("give --portraits FOLDER, or --identities N for N faces of the production GAN")
    else:
        faces = plan_generated_identities(identities, config.split, seed)
    if samples_per_identity < 1:
        raise AvatarInputError("--samples-per-identity must be at least 1")
    shards = plan_shards(faces, samples_per_identity, config.samples_per_shard)
    settings = {"config": config.model_dump(mode="json"), "seed": seed, "samples_per_identity": samples_per_identity,
                "identities": [PurePosixPath(face.source).name for face in faces], "models": models or {},
                "backgrounds": background_images,
                "shape_model": shape_model or {"data_sets": [], "faces": 0, "fingerprints": []},
                "n_samples": len(faces) * samples_per_identity, "chunk": shards[0].n_samples}
    return faces, shards, settings


def dataset_folder(data_dir: str, name: str) -> str:
    """Where a data set named `name` lives: `<data_dir>/synthetic/<name>`, a path or a URL."""
    if not name or "/" in name or name in (".", ".."):
        raise AvatarInputError(f"--name {name!r} must be a plain folder name")
    return DataLocation(data_dir).join("synthetic", name).url


def production_generators(data_dir: str, portraits: str | None) -> dict[str, int]:
    """The production GAN and refiner versions generated identities come from ({} with a folder)."""
    if portraits is not None:
        return {}
    from stores.model_registry import DIFFUSION_MODEL, GAN_MODEL, production_versions

    versions = production_versions(data_dir, [GAN_MODEL, DIFFUSION_MODEL])
    missing = sorted(name for name, version in versions.items() if version is None)
    if missing:
        raise AvatarInputError(f"no production {' or '.join(missing)} in {data_dir}: train one with "
                               f"`avatarflow train --data-dir {data_dir}`, or give --portraits FOLDER")
    return versions
