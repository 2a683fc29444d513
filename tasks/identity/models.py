"""The production generators, loaded once per worker process and model version."""

from __future__ import annotations

from stores.location import DataLocation
from stores.model_registry import ModelIntegrityError, ModelMissingError, load_model_version, production_version_number
from tasks.common.errors import AvatarInputError

_LOADED: dict[tuple, tuple] = {}


def production_model(data_dir: str, name: str, device: str):
    """(model, version) of the production model, loaded once per worker process and version."""
    try:
        version = production_version_number(data_dir, name)
    except ModelMissingError as error:
        raise AvatarInputError(str(error)) from None
    key = (DataLocation(data_dir).url, name, version, device)
    if key not in _LOADED:
        try:
            _LOADED[key] = (load_model_version(data_dir, name, version, device), version)
        except ModelIntegrityError as error:  # a tampered or damaged model file: refuse, one line
            raise AvatarInputError(str(error)) from None
    return _LOADED[key]
