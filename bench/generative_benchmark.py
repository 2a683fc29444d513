"""Speed of the generative stages, per training config and device: GAN training images/s, diffusion
training images/s, sampling ms per image (GAN draw, SDEdit, 2× super-resolution) and style-transfer
seconds per 512² texture; and the peak memory of each network's training steps (RSS on the CPU,
allocated memory on CUDA).

    .venv/bin/python bench/generative_benchmark.py [--configs small base] [--devices cpu cuda]
                                                   [--seconds 20] [--threads N]

Networks are freshly initialised: speed does not depend on training. Prints a table and JSON;
asserts nothing. Devices that are not present are skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.diffusion.bundle import DiffusionBundle  # noqa: E402
from tasks.diffusion.config import DIFFUSION_CONFIGS  # noqa: E402
from tasks.diffusion.training import DiffusionTrainer, make_sr_pair  # noqa: E402
from tasks.diffusion.unet import build_denoiser, build_upscaler  # noqa: E402
from tasks.gan.config import GAN_CONFIGS  # noqa: E402
from tasks.gan.sampling import generate_faces  # noqa: E402
from tasks.gan.training import GanTrainer  # noqa: E402
from tasks.style.config import StyleConfig  # noqa: E402
from tasks.style.presets import resolve_style  # noqa: E402
from tasks.style.transfer import stylise  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def rate(step, images_per_call: int, seconds: float, device: torch.device) -> float:
    """Images per second of `step`, after one warm-up call, over about `seconds`."""
    step()
    _sync(device)
    started, images = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        step()
        images += images_per_call
    _sync(device)
    return images / (time.perf_counter() - started)


@contextmanager
def peak_memory_gib(device: torch.device, into: dict, key: str):
    """Store the peak memory while the block runs: the process's RSS polled every 20 ms on the CPU
    (training allocates in bursts far longer than that), torch's own peak on CUDA."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        yield
        into[key] = torch.cuda.max_memory_allocated(device) / 2**30
        return
    process, peak, done = psutil.Process(), [psutil.Process().memory_info().rss], threading.Event()

    def poll() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], process.memory_info().rss)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        into[key] = max(peak[0], process.memory_info().rss) / 2**30


def bench_config(name: str, device: torch.device, seconds: float) -> dict:
    gan_config, diffusion_config = GAN_CONFIGS[name], DIFFUSION_CONFIGS[name]
    result = {"config": name, "device": str(device)}
    # GAN training: one D and one G update per step.
    trainer = GanTrainer(gan_config, device)
    real = torch.rand(gan_config.batch_size, 3, gan_config.resolution, gan_config.resolution, device=device) * 2 - 1
    with peak_memory_gib(device, result, "gan_train_peak_gib"):
        result["gan_train_images_per_s"] = rate(lambda: trainer.step(real), gan_config.batch_size, seconds, device)
    latents = np.random.default_rng(0).standard_normal((64, gan_config.z_dim)).astype(np.float32)
    generator = trainer.generator_ema
    result["gan_sample_ms_per_image"] = 1000 / rate(lambda: generate_faces(generator, latents, 0.7, 0), 64,
                                                    seconds / 2, device)
    # Diffusion training: the denoiser and the upscaler, batch of the config.
    c = diffusion_config
    denoiser = DiffusionTrainer.from_config(build_denoiser(c).to(device), c)
    upscaler = DiffusionTrainer.from_config(build_upscaler(c).to(device), c)
    low = torch.rand(c.batch_size, 3, c.resolution, c.resolution, device=device) * 2 - 1
    crop = c.upscaler_crop or c.resolution * c.upscale
    target, cond = make_sr_pair(torch.rand(c.batch_size, 3, crop, crop, device=device) * 2 - 1, c.upscale,
                                c.residual_scale)
    with peak_memory_gib(device, result, "denoiser_train_peak_gib"):
        result["denoiser_train_images_per_s"] = rate(lambda: denoiser.step(low), c.batch_size, seconds, device)
    with peak_memory_gib(device, result, "upscaler_train_peak_gib"):
        result["upscaler_train_images_per_s"] = rate(lambda: upscaler.step(target, cond), c.batch_size, seconds,
                                                     device)
    # Sampling: SDEdit at the config's strength and the 2× upscale, 8 images a call.
    bundle = DiffusionBundle(denoiser.ema, upscaler.ema, c).to(device)
    batch = low[:8]
    generator = torch.Generator().manual_seed(0)
    result["sdedit_ms_per_image"] = 1000 / rate(lambda: bundle.refine(batch, c.sdedit_strength, generator), 8,
                                                seconds / 2, device)
    result["upscale_ms_per_image"] = 1000 / rate(lambda: bundle.upscale(batch, generator), 8, seconds / 2, device)
    return result


def bench_style(device: torch.device) -> dict:
    from skimage import data
    from PIL import Image

    texture = np.asarray(Image.fromarray(data.astronaut()).resize((512, 512)))
    _, style = resolve_style("oil")
    config = StyleConfig(device=device.type)
    stylise(texture, style, config, seed=0)  # warm-up
    _sync(device)
    started = time.perf_counter()
    result = stylise(texture, style, config, seed=1)
    _sync(device)
    return {"device": str(device), "style_seconds_per_512_texture": time.perf_counter() - started,
            "gram_loss_reduction": 1 - result.gram_loss_after / result.gram_loss_before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # base steps in micro-batches, so it fits in 8 GiB on the CPU too, at minutes a step.
    parser.add_argument("--configs", nargs="+", default=None, choices=sorted(GAN_CONFIGS),
                        help="default: small on the CPU, small and base on a GPU")
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"], choices=["cpu", "cuda"])
    parser.add_argument("--seconds", type=float, default=20.0, help="timing window per measurement")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device(d) for d in args.devices if d == "cpu" or torch.cuda.is_available()]
    rows, styles = [], []
    for device in devices:
        name = torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
        print(f"== {device} ({name})", flush=True)
        configs = args.configs or (["small", "base"] if device.type == "cuda" else ["small"])
        for config in configs:
            row = bench_config(config, device, args.seconds)
            rows.append(row)
            print("  " + "  ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
                  flush=True)
        styles.append(bench_style(device))
        print(f"  style: {styles[-1]['style_seconds_per_512_texture']:.2f} s per 512² texture", flush=True)
    by_key = {(row["config"], row["device"].split(":")[0]): row for row in rows}
    for (config, device), row in by_key.items():
        if device == "cuda" and (config, "cpu") in by_key:
            ratio = row["gan_train_images_per_s"] / by_key[(config, "cpu")]["gan_train_images_per_s"]
            print(f"  {config}: the GPU trains the GAN {ratio:.1f}× faster than the CPU")
    print(json.dumps({"configs": rows, "style": styles}, indent=1))


if __name__ == "__main__":
    main()
