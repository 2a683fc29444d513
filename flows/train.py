"""The training flow: images and videos → aligned face dataset → GAN and diffusion models and one
feed-forward style network per style preset, trained for their step budgets, logged and registered
in MLflow (the production alias moves only for a model that passes its promotion gates and beats
production)."""

from __future__ import annotations

from prefect import flow

from avatarflow.presets import get_training_preset
from infra.profiles import get_profile, gpu_slot, make_task_runner
from stores.location import DataLocation
from tasks.batch.monitoring import publish_training_table
from tasks.dataset.task import build_dataset
from tasks.diffusion.task import train_diffusion_model
from tasks.gan.task import train_gan_model
from tasks.style.training_task import train_style_network_model


@flow(name="train")
def train(data: list[str] | str, config: str = "small", device: str = "auto", data_dir: str = "avatarflow-data",
          overrides: dict | None = None, resume: bool = True, profile: str | None = None,
          dask_address: str | None = None, workers: int | None = None) -> dict:
    """`data`: folders or manifests (a comma-separated string from a deployment works too);
    `overrides` = {"gan": {...}, "diffusion": {...}, "style": {...}} replaces single fields of the preset. The
    execution profile is resolved when the run starts."""
    execution = get_profile(profile, dask_address, workers)
    train_models_on = train_models.with_options(task_runner=make_task_runner(execution))
    return train_models_on(data, config, device, data_dir, execution.gpu_tasks, overrides, resume)


@flow(name="train-models")
def train_models(data: list[str] | str, config: str, device: str, data_dir: str, gpu_tasks: bool,
                 overrides: dict | None, resume: bool) -> dict:
    if isinstance(data, str):
        data = [part.strip() for part in data.split(",") if part.strip()]
    preset = get_training_preset(config).with_overrides(overrides or {})
    data_path = DataLocation(data_dir).url
    dataset = build_dataset.submit(data, DataLocation(data_path).join("datasets.zarr").url, preset.dataset).result()
    with gpu_slot(gpu_tasks):
        gan = train_gan_model.submit(dataset, data_path, preset.gan, device, resume=resume)
    if not gpu_tasks:
        # Each training uses every CPU core it sees, so on CPU-only workers they take turns
        # (waiting here, so no worker sits polling for the GAN); with GPUs they overlap.
        gan.wait()
    with gpu_slot(gpu_tasks):
        diffusion = train_diffusion_model.submit(dataset, data_path, preset.diffusion, device, resume=resume)
    styles, previous = {}, diffusion
    for style in preset.style.presets:  # one network per style preset, taking turns on CPU workers too
        if not gpu_tasks:
            previous.wait()
        with gpu_slot(gpu_tasks):
            styles[style] = previous = train_style_network_model.submit(dataset, data_path, style, preset.style,
                                                                        device=device)
    result = {"dataset": dataset.__dict__, "gan": gan.result(), "diffusion": diffusion.result(),
              "style": {style: future.result() for style, future in styles.items()}}
    publish_training_table(result)
    return result
