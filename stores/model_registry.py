"""The MLflow model registry: log trained torch networks, register them under fixed names, move
the `production` alias only when a new version passes its promotion gates and scores better than
the version there, and load by alias.

Models are stored in pickle format, and unpickling runs code: whoever can write the artifact store
can run code in every process that loads a model. Each version therefore carries the SHA-256 of its
files as tags (`sha256.<file>`), and a model is loaded only when its files still match them."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

from stores.location import DataLocation
from stores.tracking import ready_tracking_uri

GAN_MODEL = "avatarflow-gan"
DIFFUSION_MODEL = "avatarflow-diffusion"
STYLE_MODEL_PREFIX = "avatarflow-style-"
"""Feed-forward style networks are registered one per preset: avatarflow-style-<preset>."""
PRODUCTION_ALIAS = "production"
TRAIN_COMMAND = "avatarflow train --config small"
_TORCH_REQUIREMENT = ["torch==2.13.0"]  # stated, so MLflow does not scan the environment


HASHED_FILES = ("data/model.pth", "data/pickle_module_info.txt", "MLmodel")
"""Files of a logged torch model whose SHA-256 is recorded and checked: the pickle, the module
MLflow imports to unpickle it, and the flavour description that says how to load it."""


def style_model_name(preset: str) -> str:
    """The registered model name of a style preset's feed-forward network."""
    return f"{STYLE_MODEL_PREFIX}{preset}"


class ModelMissingError(LookupError):
    """No version of a model carries the production alias."""


class ModelIntegrityError(RuntimeError):
    """A registered model's files no longer match the SHA-256 recorded when it was registered."""


class Gate(Protocol):
    """A promotion gate's verdict (tasks.quality.gates.GateResult has this shape)."""

    gate: str
    passed: bool
    reason: str


@dataclass(frozen=True)
class Registration:
    """What registering one model did."""

    name: str
    version: int
    metric: str
    value: float
    promoted: bool
    """True when the production alias now points at this version."""
    previous_version: int | None
    previous_value: float | None
    failed_gates: list[str] = field(default_factory=list)
    """Names of the promotion gates this version failed (empty: all passed)."""
    reason: str = ""
    """Why the alias moved or stayed, in one line."""


def _client(data_dir: str | os.PathLike):
    import mlflow

    mlflow.set_tracking_uri(ready_tracking_uri(data_dir))
    return mlflow.MlflowClient()


def production_version(data_dir: str | os.PathLike, name: str):
    """The ModelVersion under the production alias, or None."""
    from mlflow.exceptions import MlflowException

    client = _client(data_dir)
    try:
        return client.get_model_version_by_alias(name, PRODUCTION_ALIAS)
    except MlflowException:
        return None


def production_versions(data_dir: str | os.PathLike, names) -> dict[str, int | None]:
    """{name: production version or None} for the given model names."""
    versions = {}
    for name in sorted(names):
        current = production_version(data_dir, name)
        versions[name] = int(current.version) if current is not None else None
    return versions


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _hash_tags(model_dir: Path) -> dict[str, str]:
    return {f"sha256.{relative}": file_sha256(model_dir / relative) for relative in HASHED_FILES
            if (model_dir / relative).is_file()}


def _download(name: str, version: int, folder: str) -> Path:
    import mlflow.artifacts

    return Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=folder))


def register_model(data_dir: str | os.PathLike, model, name: str, metric: str, value: float,
                   higher_is_better: bool, gates: Sequence[Gate], tags: dict[str, str] | None = None) -> Registration:
    """Log `model` (a torch module) into the active MLflow run and register it as a new version of
    `name`, tagged with its metric, each gate's verdict, the SHA-256 of its files and `tags`. The
    production alias moves to it only if every gate passed and it beats the version there; the
    first version is held to the same gates."""
    import mlflow.pytorch

    client = _client(data_dir)
    info = mlflow.pytorch.log_model(model.cpu(), name=name.removeprefix("avatarflow-"), registered_model_name=name,
                                    serialization_format="pickle", pip_requirements=_TORCH_REQUIREMENT)
    version = int(info.registered_model_version)
    # 1. Hash the files as stored (downloaded back), so the tags describe what a loader will read.
    with tempfile.TemporaryDirectory(prefix="avatarflow-model-") as folder:
        hashes = _hash_tags(_download(name, version, folder))
    if "sha256.data/model.pth" not in hashes:
        raise ModelIntegrityError(f"{name} v{version} has no data/model.pth to hash")
    failed = [gate for gate in gates if not gate.passed]
    version_tags = {metric: f"{value:.6g}", **hashes, **(tags or {}),
                    **{f"gate.{gate.gate}": ("pass: " if gate.passed else "fail: ") + gate.reason for gate in gates},
                    "gates": "passed" if not failed else "failed: " + ", ".join(gate.gate for gate in failed)}
    for key, text in version_tags.items():
        client.set_model_version_tag(name, str(version), key, str(text)[:5000])
    # 2. Gates first, then the comparison with production.
    current = production_version(data_dir, name)
    previous_value = None
    if current is not None and metric in current.tags:
        previous_value = float(current.tags[metric])
    better = previous_value is None or (value > previous_value if higher_is_better else value < previous_value)
    promoted = not failed and better
    if failed:
        reason = "failed its gates: " + "; ".join(f"{gate.gate}: {gate.reason}" for gate in failed)
    elif not better:
        reason = f"production v{current.version} scores better ({metric} {previous_value:.4g} vs {value:.4g})"
    else:
        reason = "passed its gates" + (f" and beats production v{current.version}" if current is not None else "")
    client.set_model_version_tag(name, str(version), "promotion",
                                 ("promoted: " if promoted else "not promoted: ") + reason)
    if promoted:
        client.set_registered_model_alias(name, PRODUCTION_ALIAS, str(version))
    return Registration(name=name, version=version, metric=metric, value=float(value), promoted=promoted,
                        previous_version=int(current.version) if current is not None else None,
                        previous_value=previous_value, failed_gates=[gate.gate for gate in failed], reason=reason)


def _latest_version(data_dir: str | os.PathLike, name: str):
    """The newest registered version of `name`, or None when it was never registered."""
    from mlflow.exceptions import MlflowException

    try:
        versions = _client(data_dir).search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    return max(versions, key=lambda v: int(v.version), default=None)


def production_version_number(data_dir: str | os.PathLike, name: str) -> int:
    """The version under the production alias; ModelMissingError naming the train command when
    there is none."""
    current = production_version(data_dir, name)
    if current is not None:
        return int(current.version)
    latest = _latest_version(data_dir, name)
    if latest is None:
        raise ModelMissingError(f"no trained {name} model (alias '{PRODUCTION_ALIAS}') in {DataLocation(data_dir).url}; "
                                f"run `{TRAIN_COMMAND} --data-dir {data_dir}` first")
    gates = latest.tags.get("gates", "no gate verdicts recorded")
    raise ModelMissingError(f"no {name} model passed its promotion gates in {DataLocation(data_dir).url} "
                            f"(latest v{latest.version}: {gates}); train longer or on more faces with "
                            f"`{TRAIN_COMMAND} --data-dir {data_dir}`")


def load_model_version(data_dir: str | os.PathLike, name: str, version: int, device: str = "cpu"):
    """One registered version of `name`, in eval mode on `device`. Its files are copied out, checked
    against the SHA-256 tags recorded at registration, and only then unpickled (from that copy);
    ModelIntegrityError when a hash is missing or differs."""
    import mlflow.pytorch

    client = _client(data_dir)  # points MLflow at the data dir's registry
    tags = client.get_model_version(name, str(version)).tags
    expected = {key: value for key, value in tags.items() if key.startswith("sha256.")}
    if "sha256.data/model.pth" not in expected:
        raise ModelIntegrityError(f"{name} v{version} has no recorded SHA-256, so it is not loaded; "
                                  f"retrain it with `{TRAIN_COMMAND}`")
    with tempfile.TemporaryDirectory(prefix="avatarflow-model-") as folder:
        model_dir = _download(name, version, folder)
        for key, digest in sorted(expected.items()):
            path = model_dir / key.removeprefix("sha256.")
            actual = file_sha256(path) if path.is_file() else "missing"
            if actual != digest:
                raise ModelIntegrityError(f"{name} v{version}: {key.removeprefix('sha256.')} does not match the "
                                          f"SHA-256 recorded at registration ({actual[:12]} vs {digest[:12]}); "
                                          "the model is not loaded")
        return mlflow.pytorch.load_model(str(model_dir), map_location=device).eval()


def load_production_model(data_dir: str | os.PathLike, name: str, device: str = "cpu"):
    """(model, version) of the production version of `name`; ModelMissingError when there is none.
    The version is resolved once, so the model and the number returned always match."""
    version = production_version_number(data_dir, name)
    return load_model_version(data_dir, name, version, device), version
