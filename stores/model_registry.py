"""The MLflow model registry: log trained torch networks, register them under fixed names, move
the `production` alias only when a new version scores better, and load by alias."""

from __future__ import annotations

import os
from dataclasses import dataclass

from stores.location import DataLocation
from stores.tracking import tracking_uri

GAN_MODEL = "avatarflow-gan"
DIFFUSION_MODEL = "avatarflow-diffusion"
PRODUCTION_ALIAS = "production"
TRAIN_COMMAND = "avatarflow train --config small"
_TORCH_REQUIREMENT = ["torch==2.13.0"]  # stated, so MLflow does not scan the environment


class ModelMissingError(LookupError):
    """No version of a model carries the production alias."""


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


def _client(data_dir: str | os.PathLike):
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(data_dir))
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


def register_model(data_dir: str | os.PathLike, model, name: str, metric: str, value: float,
                   higher_is_better: bool) -> Registration:
    """Log `model` (a torch module) into the active MLflow run, register it as a new version of
    `name` tagged with its metric, and point `production` at it if it beats the version there."""
    import mlflow.pytorch

    client = _client(data_dir)
    info = mlflow.pytorch.log_model(model.cpu(), name=name.removeprefix("avatarflow-"), registered_model_name=name,
                                    serialization_format="pickle", pip_requirements=_TORCH_REQUIREMENT)
    version = int(info.registered_model_version)
    client.set_model_version_tag(name, str(version), metric, f"{value:.6g}")
    current = production_version(data_dir, name)
    previous_value = None
    if current is not None and metric in current.tags:
        previous_value = float(current.tags[metric])
    better = previous_value is None or (value > previous_value if higher_is_better else value < previous_value)
    if better:
        client.set_registered_model_alias(name, PRODUCTION_ALIAS, str(version))
    return Registration(name=name, version=version, metric=metric, value=float(value), promoted=better,
                        previous_version=int(current.version) if current is not None else None,
                        previous_value=previous_value)


def production_version_number(data_dir: str | os.PathLike, name: str) -> int:
    """The version under the production alias; ModelMissingError naming the train command when
    there is none."""
    current = production_version(data_dir, name)
    if current is None:
        raise ModelMissingError(f"no trained {name} model (alias '{PRODUCTION_ALIAS}') in {DataLocation(data_dir).url}; "
                                f"run `{TRAIN_COMMAND} --data-dir {data_dir}` first")
    return int(current.version)


def load_model_version(data_dir: str | os.PathLike, name: str, version: int, device: str = "cpu"):
    """One registered version of `name`, in eval mode on `device`."""
    import mlflow.pytorch

    _client(data_dir)  # points MLflow at the data dir's registry
    return mlflow.pytorch.load_model(f"models:/{name}/{version}", map_location=device).eval()


def load_production_model(data_dir: str | os.PathLike, name: str, device: str = "cpu"):
    """(model, version) of the production version of `name`; ModelMissingError when there is none.
    The version is resolved once, so the model and the number returned always match."""
    version = production_version_number(data_dir, name)
    return load_model_version(data_dir, name, version, device), version
