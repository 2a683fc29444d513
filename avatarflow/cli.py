"""The `avatarflow` command: start flows from the shell."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from avatarflow.presets import PRESETS
from infra.prefect_server import ensure_server, quiet_environment, use_server


def _prepare_prefect(data_dir: Path, port: int | None) -> str:
    quiet_environment()
    print(f"prefect: starting or reusing the local server (127.0.0.1:{port or 'default port'}) …", flush=True)
    url = ensure_server(data_dir / "prefect", port=port)
    use_server(url, data_dir / "prefect" / "results")
    print(f"prefect: {url.removesuffix('/api')} (UI)", flush=True)
    return url


def _print_summary(summary: dict) -> None:
    print()
    for stage, seconds in summary["stage_seconds"].items():
        print(f"  stage {stage:<12} {seconds:8.2f} s (sum over avatars)")
    if summary["realtime_factor"] is not None:
        print(f"  {summary['video_seconds']:.1f} s of video in {summary['wall_seconds']:.1f} s wall "
              f"({summary['realtime_factor']:.2f}x real time)")
    print(f"finished: {len(summary['finished'])} ({len(summary['reused'])} reused)   "
          f"quarantined: {len(summary['failed'])}")
    for avatar, warnings in summary.get("warnings", {}).items():
        for warning in warnings:
            print(f"  warning {avatar}: {warning}")
    for failure in summary["failed"]:
        print(f"  line {failure['line']} id {failure['id'] or '?'}: {failure['stage']}: {failure['error']}")
    print(f"quarantine report: {summary['quarantine']}")
    print(f"gallery: {summary['report']}")
    print(f"outputs: {summary['output_folder']}")


def _start_run(args: argparse.Namespace):
    """(data dir, execution profile) for a flow run: the data dir exists and the Prefect server
    runs. None, after printing the error, when either cannot be had."""
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        _prepare_prefect(data_dir, args.prefect_port)
        from infra.profiles import get_profile

        return data_dir, get_profile(args.profile, args.dask_address, args.workers)
    except (RuntimeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return None


def produce_command(args: argparse.Namespace, manifest: Path, input_roots: list[str]) -> int:
    from stores.manifest import ManifestError, read_manifest

    try:
        read_manifest(manifest)  # unreadable files and unknown columns end here, before any server starts
    except ManifestError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    started = _start_run(args)
    if started is None:
        return 2
    data_dir, profile = started
    from flows.produce import produce
    from infra.profiles import make_task_runner

    where = profile.dask_address or f"a LocalCluster of {profile.n_workers} worker process(es)"
    print(f"dask: {where}; preset {args.preset}; data {data_dir}", flush=True)
    runner = make_task_runner(profile)
    summary = produce.with_options(task_runner=runner)(
        manifest=str(manifest.resolve()), data_dir=str(data_dir), preset=args.preset,
        input_roots=sorted({str(Path(root).resolve()) for root in input_roots}), gpu_tasks=profile.gpu_tasks,
    )
    _print_summary(summary)
    return 0 if summary["finished"] or not summary["failed"] else 1


def _parse_overrides(pairs: list[str]) -> dict:
    """["gan.steps=20", "diffusion.max_seconds=60"] → {"gan": {"steps": 20}, "diffusion": {...}}."""
    import json

    overrides: dict[str, dict] = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        section, dot, field = key.partition(".")
        if not separator or not dot:
            raise ValueError(f"--set takes SECTION.FIELD=VALUE (e.g. gan.steps=200), got {pair!r}")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        overrides.setdefault(section, {})[field] = tuple(parsed) if isinstance(parsed, list) else parsed
    return overrides


def _print_training(result: dict) -> None:
    dataset = result["dataset"]
    print()
    print(f"  dataset    {dataset['n_images']} faces ({'reused' if dataset['reused'] else 'built'} "
          f"in {dataset['seconds']:.1f} s), labels {dataset['label_counts']}")
    for key in ("gan", "diffusion"):
        model = result[key]
        metrics = ", ".join(f"{k.removeprefix('final_')} {v:.3g}" for k, v in model.items()
                            if k.startswith("final_") and isinstance(v, (int, float)))
        alias = "production" if model["promoted"] else "not promoted (production scores better)"
        print(f"  {key:<10} {model['model']} v{model['version']}: {model['steps']} steps in {model['seconds']:.0f} s; "
              f"{metrics}; {alias}")


def train_command(args: argparse.Namespace) -> int:
    from avatarflow.presets import get_training_preset
    from avatarflow.samples import default_training_data

    data = args.data or default_training_data()
    if not data:
        print("error: no training data: give --data FOLDER_OR_MANIFEST (images, videos or a manifest)", file=sys.stderr)
        return 2
    missing = [path for path in data if not Path(path).exists()]
    if missing:
        print(f"error: --data path(s) not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        overrides = _parse_overrides(args.set)
        get_training_preset(args.config).with_overrides(overrides)
        from tasks.common.torch_utils import resolve_device

        resolve_device(args.device)
    except (ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    started = _start_run(args)
    if started is None:
        return 2
    data_dir, profile = started
    from flows.train import train
    from infra.profiles import make_task_runner

    print(f"train: config {args.config} on {args.device}; data {', '.join(data)}; output {data_dir}", flush=True)
    result = train.with_options(task_runner=make_task_runner(profile))(
        data=[str(Path(path).resolve()) for path in data], config=args.config, device=args.device,
        data_dir=str(data_dir), gpu_tasks=profile.gpu_tasks, overrides=overrides, resume=not args.restart)
    _print_training(result)
    print(f"mlflow: {data_dir / 'mlflow.db'} (mlflow ui --backend-store-uri sqlite:///{data_dir / 'mlflow.db'})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="avatarflow", description="Talking 3D doubles from a manifest.")
    commands = parser.add_subparsers(dest="command", required=True)

    def run_options(sub: argparse.ArgumentParser, pipeline: bool = True) -> None:
        sub.add_argument("--data-dir", default="avatarflow-data", help="store, outputs and MLflow (default ./avatarflow-data)")
        sub.add_argument("--dask-address", help="address of an existing dask scheduler (default: start a LocalCluster)")
        sub.add_argument("--profile", choices=["local", "gpu", "cluster"], help="execution profile (default: auto)")
        sub.add_argument("--workers", type=int, help="LocalCluster worker processes (default 2)")
        if pipeline:
            sub.add_argument("--preset", default="photo", choices=sorted(PRESETS),
                             help="pipeline preset (default photo)")
        sub.add_argument("--prefect-port", type=int, help="local Prefect server port (default 4200)")

    produce = commands.add_parser("produce", help="build, animate and render every row of a manifest")
    produce.add_argument("manifest", type=Path, help="CSV or Parquet manifest")
    produce.add_argument("--input-root", action="append", default=[], help="extra folder inputs may come from")
    run_options(produce)

    training = commands.add_parser("train", help="build a face dataset and train the GAN and diffusion models")
    training.add_argument("--data", action="append", default=[],
                          help="folder of images/videos or a manifest; repeat for more (default: the shared samples)")
    training.add_argument("--config", default="small", choices=["small", "base", "large"],
                          help="small: minutes on 2 CPU cores; base/large: for a GPU (default small)")
    training.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="torch device (default auto)")
    training.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                          help="override one setting, e.g. gan.steps=200 or diffusion.max_seconds=60")
    training.add_argument("--restart", action="store_true", help="ignore checkpoints and train from scratch")
    run_options(training, pipeline=False)

    demo = commands.add_parser("demo", help="run produce on the bundled sample manifest")
    run_options(demo)

    server = commands.add_parser("server", help="start (or find) the local Prefect server and print its URL")
    server.add_argument("--data-dir", default="avatarflow-data")
    server.add_argument("--prefect-port", type=int)

    args = parser.parse_args(argv)
    if args.command == "server":
        _prepare_prefect(Path(args.data_dir).resolve(), args.prefect_port)
        return 0
    if args.command == "train":
        return train_command(args)
    if args.command == "demo":
        from avatarflow.samples import write_sample_manifest

        from stores.model_registry import DIFFUSION_MODEL, GAN_MODEL, production_versions

        data_dir = Path(args.data_dir).resolve()
        trained = None not in production_versions(data_dir, [GAN_MODEL, DIFFUSION_MODEL]).values()
        manifest, roots = write_sample_manifest(data_dir / "sample", with_generated=trained)
        if not trained:
            print("sample: no trained generators yet, so the rows with generated faces and the refined "
                  "photo are left out; `avatarflow train --data-dir "
                  f"{args.data_dir}` adds them", flush=True)
        print(f"sample manifest: {manifest}", flush=True)
        return produce_command(args, manifest, roots)
    return produce_command(args, args.manifest, args.input_root)


if __name__ == "__main__":
    if __package__ is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
