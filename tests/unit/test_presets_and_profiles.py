"""Every preset, profile and deployment resolves; configs survive a save/load round trip."""

import json
from pathlib import Path

import pytest
import yaml

from avatarflow.presets import (PRESETS, PipelineConfig, config_from_dict, config_to_dict, get_preset,
                                get_training_preset)
from infra.profiles import get_profile

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_config_round_trips_through_json(name):
    config = get_preset(name)
    restored = config_from_dict(PipelineConfig, json.loads(json.dumps(config_to_dict(config))))
    assert restored == config


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_exports_follow_the_render_at_low_priority_unless_the_preset_turns_them_off(name):
    from flows.produce import avatar_stages
    from flows.windows import LOW_PRIORITY
    from tasks.batch.plan import RunPlan
    from tasks.common.rows import AvatarRow

    config = get_preset(name)
    plan = RunPlan(run="r", store_url="memory://", data_dir="d", manifest_dir="m", manifest_sha256="", started_at=0.0)
    for row in (AvatarRow(id="a", line=2, portrait="p.png", text="Hi."),
                AvatarRow(id="b", line=3, portrait="p.png", style="sketch", audio="a.wav")):
        stages = avatar_stages(row, plan, config, gpu_tasks=True).stages
        names = [stage.name for stage in stages]
        if config.render.write_glb or config.render.write_blend:
            assert names[-2:] == ["render", "export"], names
            export = stages[-1]
            assert "render" in export.needs and not export.gpu
            assert export.priority == LOW_PRIORITY < min(stage.priority for stage in stages[:-1]) == 0
        else:
            assert names[-1] == "render" and "export" not in names, names


def test_the_preview_preset_renders_photo_mode_without_glb_or_blend():
    preview, photo = get_preset("preview").render, get_preset("photo").render
    assert (preview.mode, preview.write_glb, preview.write_blend) == ("photo", False, False)
    assert photo.write_glb and photo.write_blend


def test_unknown_preset_and_profile_are_clear_errors():
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        get_preset("nope")
    with pytest.raises(ValueError, match="unknown profile 'nope'"):
        get_profile("nope")


def test_profiles_resolve_when_asked_and_not_at_import(monkeypatch):
    monkeypatch.delenv("AVATARFLOW_PROFILE", raising=False)
    monkeypatch.delenv("AVATARFLOW_DASK_ADDRESS", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert get_profile().name == "local" and get_profile("local").dask_address is None
    assert get_profile("local", workers=3).cluster_kwargs()["n_workers"] == 3
    external = get_profile("local", dask_address="tcp://127.0.0.1:8786")
    assert external.name == "cluster" and external.dask_address == "tcp://127.0.0.1:8786" and not external.gpu_tasks
    with pytest.raises(ValueError, match="needs a scheduler address"):
        get_profile("cluster")
    with pytest.raises(ValueError, match="found no GPU"):
        get_profile("gpu")
    # A deployment's job variables arrive as environment variables of the run.
    monkeypatch.setenv("AVATARFLOW_DASK_ADDRESS", "tcp://10.0.0.5:8786")
    monkeypatch.setenv("AVATARFLOW_GPU_TASKS", "1")
    cluster = get_profile()
    assert cluster.name == "cluster" and cluster.dask_address == "tcp://10.0.0.5:8786" and cluster.gpu_tasks
    assert get_profile("local").dask_address is None  # an explicit local profile ignores the address
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    gpu = get_profile("gpu")
    assert gpu.gpu_devices == ("0", "1") and gpu.gpu_tasks and gpu.cluster_kwargs()["gpu_devices"] == ["0", "1"]


def test_gpu_workers_are_pinned_and_only_they_take_gpu_tasks():
    import os

    import dask
    from distributed import Client

    from infra.profiles import gpu_slot, start_local_cluster

    def visible_devices():
        return os.environ.get("CUDA_VISIBLE_DEVICES")

    with start_local_cluster(n_workers=1, gpu_devices=["3"], memory_limit="1GiB") as cluster, Client(cluster) as client:
        gpu_worker = next(a for a, w in client.scheduler_info()["workers"].items() if w["resources"].get("GPU") == 1)
        with gpu_slot(True):
            pinned = [client.submit(visible_devices, pure=False) for _ in range(4)]
        for future in pinned:
            assert future.result() == "3"
        assert {who for key, who in client.who_has(pinned).items() for who in who} == {gpu_worker}
        assert client.submit(visible_devices, workers=[a for a in client.scheduler_info()["workers"] if a != gpu_worker],
                             pure=False).result() == ""
    assert dask.config.get("annotations", default=None) is None


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
    assert {d["entrypoint"] for d in spec["deployments"]} == {"flows.produce:produce", "flows.synthesize:synthesize",
                                                              "flows.train:train"}


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
