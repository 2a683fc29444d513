"""Style transfer: the feed-forward network against the optimisation path, per preset.

    .venv/bin/python bench/style_benchmark.py [--data-dir DIR | --faces FOLDER] [--presets oil sketch]
                                              [--set steps=200] [--held-out 8] [--portrait IMAGE]

Networks come from the data dir's registry (the latest version of avatarflow-style-<preset>, promoted
or not), or, with --faces, are trained here on that folder's images with the small
StyleNetworkConfig (fields changed by --set). For each preset it prints, in one run:
- seconds per 512² texture, with torch on ONE thread, for both paths (the network timed over
  several passes after a warm-up), as wall time and as the process's CPU time;
- on held-out faces: both paths' mean Gram loss, its ratio, and both landmark errors, the
  figures the promotion gates compare.
Asserts nothing; timings on a shared machine are noisy, so compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.style.config import STYLE_PRESET_NAMES, StyleConfig, StyleNetworkConfig  # noqa: E402
from tasks.style.network import StyleNetwork  # noqa: E402
from tasks.style.network_eval import compare_paths  # noqa: E402
from tasks.style.network_training import coloured_faces, train_style_network  # noqa: E402
from tasks.style.presets import resolve_style  # noqa: E402
from tasks.style.training_task import split_faces  # noqa: E402
from tasks.style.transfer import stylise, stylise_with_network  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"


def _faces(folder: Path, size: int, limit: int = 400) -> np.ndarray:
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    picked = np.random.default_rng(0).permutation(len(paths))[:limit]
    return np.stack([np.asarray(Image.open(paths[i]).convert("RGB").resize((size, size), Image.BICUBIC))
                     for i in sorted(picked)])


def _registered(data_dir: str, preset: str):
    from stores.model_registry import load_model_version, style_model_name
    from stores.tracking import ready_tracking_uri

    import mlflow

    mlflow.set_tracking_uri(ready_tracking_uri(data_dir))
    name = style_model_name(preset)
    versions = mlflow.MlflowClient().search_model_versions(f"name = '{name}'")
    if not versions:
        return None, None
    latest = max(int(v.version) for v in versions)
    return load_model_version(data_dir, name, latest), latest


def _one_thread_seconds(function, repeats: int) -> tuple[float, float]:
    """(wall, CPU) seconds per call with torch on one thread. On a busy machine the wall time
    grows with the load while the process's CPU time does not, so both are printed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        function()  # warm-up
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(repeats):
            function()
        return (time.perf_counter() - wall) / repeats, (time.process_time() - cpu) / repeats
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="take each preset's latest registered network from here")
    parser.add_argument("--faces", default=str(SHARED / "faces128"), help="train here on this folder's faces")
    parser.add_argument("--presets", nargs="+", default=list(STYLE_PRESET_NAMES))
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a StyleNetworkConfig field for training here (e.g. steps=400)")
    parser.add_argument("--held-out", type=int, default=8)
    parser.add_argument("--portrait", default=str(SHARED / "samples" / "portraits" / "sfhq_pt1_00000058.jpg"))
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training and the held-out check")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = {key: json.loads(value) for key, value in (pair.split("=", 1) for pair in args.set)}
    config = dataclasses.replace(StyleNetworkConfig(), held_out=args.held_out, **overrides)
    style_config = StyleConfig(device="cpu")
    texture = np.asarray(Image.open(args.portrait).convert("RGB").resize((512, 512), Image.BICUBIC))
    faces = None if args.data_dir else _faces(Path(args.faces), config.size)
    rows = []
    for preset in args.presets:
        _, style = resolve_style(preset)
        if args.data_dir:
            network, version = _registered(args.data_dir, preset)
            if network is None:
                print(f"{preset}: no registered network in {args.data_dir}; skipped", flush=True)
                continue
            source = f"registered v{version}"
            from stores.dataset_store import DatasetStore

            held = split_faces(DatasetStore(str(Path(args.data_dir) / "datasets.zarr")).read_crops_at(
                "faces", network.size), args.held_out, network.config.seed)[1]
        else:
            training, held = split_faces(faces, config.held_out, config.seed)
            network = StyleNetwork(config, preset)
            report = train_style_network(network, coloured_faces(training, style, style_config), style, config,
                                         style_config, torch.device("cpu"))
            source = f"trained here: {report.steps} steps in {report.seconds:.0f} s ({report.stopped_by})"
        network_seconds = _one_thread_seconds(lambda: stylise_with_network(texture, style, network, style_config), 5)
        optimisation_seconds = _one_thread_seconds(lambda: stylise(texture, style, style_config, seed=0), 1)
        ours, optimised, _ = compare_paths(held, style, network, style_config, seed=config.seed)
        row = {"preset": preset, "network": source,
               "network_s_per_512": round(network_seconds[0], 3), "network_cpu_s_per_512": round(network_seconds[1], 3),
               "optimisation_s_per_512": round(optimisation_seconds[0], 2),
               "optimisation_cpu_s_per_512": round(optimisation_seconds[1], 2),
               "speed_up_cpu": round(optimisation_seconds[1] / network_seconds[1], 1),
               "network_gram": round(ours.gram_loss, 4), "optimisation_gram": round(optimised.gram_loss, 4),
               "coloured_gram": round(ours.gram_loss_before, 4),
               "gram_ratio": round(ours.gram_loss / max(optimised.gram_loss, 1e-12), 2),
               "network_landmark_error": round(ours.landmark_error, 4),
               "optimisation_landmark_error": round(optimised.landmark_error, 4), "held_out": len(held)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print(f"{'preset':<12} {'net s/512²':>10} {'(CPU s)':>8} {'opt s/512²':>10} {'(CPU s)':>8} {'Gram net':>9} "
          f"{'Gram opt':>9} {'ratio':>6} {'lmk net':>8} {'lmk opt':>8}  network")
    for row in rows:
        print(f"{row['preset']:<12} {row['network_s_per_512']:>10.3f} {row['network_cpu_s_per_512']:>8.3f} "
              f"{row['optimisation_s_per_512']:>10.2f} {row['optimisation_cpu_s_per_512']:>8.2f} "
              f"{row['network_gram']:>9.4f} {row['optimisation_gram']:>9.4f} {row['gram_ratio']:>6.2f} "
              f"{row['network_landmark_error']:>8.4f} {row['optimisation_landmark_error']:>8.4f}  {row['network']}")


if __name__ == "__main__":
    main()
