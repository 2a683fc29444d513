"""Every preset, profile and deployment resolves; configs survive a save/load round trip."""

import json
from pathlib import Path

import pytest
import yaml

from avatarflow.presets import (PRESETS, PipelineConfig, config_from_dict, config_to_dict, get_preset,
                                get_training_preset)
from infra.profiles import PROFILES, get_profile

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_config_round_trips_through_json(name):
    config = get_preset(name)
    restored = config_from_dict(PipelineConfig, json.loads(json.dumps(config_to_dict(config))))
    assert restored == config


def test_unknown_preset_and_profile_are_clear_errors():
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        get_preset("nope")
    with pytest.raises(ValueError, match="unknown profile 'nope'"):
        get_profile("nope")


def test_profiles_resolve():
    assert get_profile("local").dask_address is None
    assert get_profile("gpu").cluster_kwargs()["resources"] == {"GPU": 1}
    external = get_profile("local", dask_address="tcp://127.0.0.1:8786")
    assert external.dask_address == "tcp://127.0.0.1:8786" and not external.gpu_tasks
    assert set(PROFILES) == {"local", "gpu", "cluster"}


def test_every_deployment_resolves_to_a_flow_and_a_preset():
    import importlib

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    assert spec["deployments"]
    for deployment in spec["deployments"]:
        module_path, _, function = deployment["entrypoint"].partition(":")
        module = importlib.import_module(module_path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, function)
        assert hasattr(flow, "fn"), f"{deployment['name']} does not point at a flow"
        preset = deployment.get("parameters", {}).get("preset")
        if preset is not None:
            get_preset(preset)
        training = deployment.get("parameters", {}).get("config")
        if training is not None:
            get_training_preset(training)
    assert {d["entrypoint"] for d in spec["deployments"]} == {"flows/produce.py:produce", "flows/train.py:train"}


def test_training_presets_resolve_and_overrides_apply():
    for name in ("small", "base", "large"):
        preset = get_training_preset(name)
        # The GAN's samples are what the diffusion model refines and upscales.
        assert preset.gan.resolution == preset.diffusion.resolution, name
        assert preset.diffusion.resolution * preset.diffusion.upscale in preset.dataset.crop_sizes, name
    changed = get_training_preset("small").with_overrides({"gan": {"steps": 5}, "diffusion": {"max_seconds": 9.0}})
    assert changed.gan.steps == 5 and changed.diffusion.max_seconds == 9.0
    with pytest.raises(ValueError, match="unknown training section"):
        get_training_preset("small").with_overrides({"render": {}})
    with pytest.raises(ValueError, match="unknown training config"):
        get_training_preset("huge")
