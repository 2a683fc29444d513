"""The `avatarflow` command: start flows from the shell."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from infra.prefect_server import (configured_api_url, ensure_server, is_healthy, local_port, quiet_environment,
                                  skip_ca_bundle_on_plain_http, use_server, without_flow_heartbeats)
from stores.location import DataLocation, is_url, local_state_dir


DEFAULT_DATA_DIR = os.environ.get("AVATARFLOW_DATA_DIR") or "avatarflow-data"
PRINTED_FAILURES = 50
"""Quarantined rows listed on the terminal; the quarantine report lists them all."""


def _open_data_dir(value: str) -> str:
    """The data dir as flows take it: a local path made absolute and created, or a URL kept as it
    is, whose MLflow database must then be named in the environment (checked before anything starts)."""
    from stores.tracking import tracking_uri

    location = DataLocation(value).ensure_folder()
    tracking_uri(location.url)
    return location.url


def _prefect_home(data_dir: str) -> Path:
    """The local Prefect server's files: on this machine, also for a URL data dir."""
    return local_state_dir(data_dir) / "prefect"


def _prepare_prefect(data_dir: str, port: int | None) -> str:
    """Use the Prefect server PREFECT_API_URL names when it is set; otherwise start (or reuse) the
    local one under the data dir."""
    quiet_environment()
    home = _prefect_home(data_dir)
    configured = configured_api_url()
    if configured:
        if not is_healthy(configured):
            raise RuntimeError(f"the Prefect server at PREFECT_API_URL={configured} does not answer; "
                               "start it, or unset PREFECT_API_URL to use a local one")
        print(f"prefect: using the configured server {configured}", flush=True)
        use_server(configured, home / "results")
        return configured
    port = local_port(port)
    print(f"prefect: starting or reusing the local server (127.0.0.1:{port}) …", flush=True)
    url = ensure_server(home, port=port)
    use_server(url, home / "results")
    print(f"prefect: {url.removesuffix('/api')} (UI)", flush=True)
    return url


def _print_summary(summary: dict) -> None:
    print()
    if summary.get("plan_seconds") is not None:
        print(f"  {'plan':<18} {summary['plan_seconds']:8.2f} s (manifest checks, fingerprints, store groups)")
    for stage, seconds in summary["stage_seconds"].items():
        print(f"  stage {stage:<12} {seconds:8.2f} s (sum over avatars)")
    if summary["realtime_factor"] is not None:
        print(f"  {summary['video_seconds']:.1f} s of video in {summary['wall_seconds']:.1f} s wall "
              f"({summary['realtime_factor']:.2f}x real time)")
    if summary.get("video_wall_seconds") is not None:
        print(f"  last MP4 published {summary['video_wall_seconds']:.1f} s after the flow started "
              "(GLB and .blend exports run after the MP4s, at low priority)")
    print(f"finished: {len(summary['finished'])} ({len(summary['reused'])} reused)   "
          f"quarantined: {len(summary['failed'])}")
    for avatar, warnings in summary.get("warnings", {}).items():
        for warning in warnings:
            print(f"  warning {avatar}: {warning}")
    for failure in summary["failed"][:PRINTED_FAILURES]:
        print(f"  line {failure['line']} id {failure['id'] or '?'}: {failure['stage']}: {failure['error']}")
    if len(summary["failed"]) > PRINTED_FAILURES:
        print(f"  … and {len(summary['failed']) - PRINTED_FAILURES} more in the quarantine report")
    print(f"quarantine report: {summary['quarantine']}")
    print(f"gallery: {summary['report']}")
    print(f"outputs: {summary['output_folder']}")


def _start_run(args: argparse.Namespace):
    """(data dir, execution profile) for a flow run: the data dir exists and the Prefect server
    runs. None, after printing the error, when either cannot be had."""
    try:
        data_dir = _open_data_dir(args.data_dir)
        url = _prepare_prefect(data_dir, args.prefect_port)
        from infra.profiles import get_profile, start_worker_forkserver

        profile = get_profile(args.profile, args.dask_address, args.workers)
        if profile.dask_address is None:  # the run starts its own workers, on this machine
            skip_ca_bundle_on_plain_http(url, _prefect_home(data_dir))
            start_worker_forkserver(profile)  # the environment is settled: the workers' imports start now
        return data_dir, profile
    except (RuntimeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return None


def _manifest_argument(value: str | os.PathLike) -> Path | str:
    """A manifest as the flows take it: a local path made absolute (the run name is derived from
    it), or an fsspec URL kept as given."""
    return os.fspath(value) if is_url(value) else Path(value).resolve()


def produce_command(args: argparse.Namespace, manifest: str | os.PathLike, input_roots: list[str]) -> int:
    from stores.expectations import send_manifest_ahead, start_manifest_gate

    start_manifest_gate()  # first: the gate's child imports great-expectations while the run starts
    from avatarflow.presets import get_preset
    from stores.manifest import ManifestError, read_manifest
    from stores.run_lock import RunLockedError, check_run_lock
    from tasks.batch.plan import run_name

    manifest = _manifest_argument(manifest)
    try:
        table = read_manifest(manifest)  # unreadable files and unknown columns end here, before any server starts
        check_run_lock(args.data_dir, run_name(manifest, args.preset))  # so does a run already in progress
    except (ManifestError, RunLockedError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # The plan checks the manifest it reads then; the gate answers at once if it is this one.
    send_manifest_ahead(table.to_frame(), get_preset(args.preset).manifest)
    return _run_produce(args, manifest, input_roots)


def _run_produce(args: argparse.Namespace, manifest, input_roots: list[str]) -> int:
    started = _start_run(args)
    if started is None:
        return 2
    data_dir, profile = started
    from prefect.exceptions import TerminationSignal

    from flows.produce import produce
    from stores.run_lock import RunLockedError
    from tasks.batch.plan import run_name

    where = profile.dask_address or f"a LocalCluster of {profile.n_workers} worker process(es)"
    print(f"dask: {where} ({profile.name} profile); preset {args.preset}; data {data_dir}", flush=True)
    if profile.threads() is not None:
        print(profile.threads().describe(), flush=True)
    started = time.time()
    try:
        with without_flow_heartbeats():  # a command's run: a deployment's keeps its heartbeats
            summary = produce(
                manifest=str(manifest), data_dir=str(data_dir), preset=args.preset,
                input_roots=sorted({DataLocation(root).url for root in input_roots}),
                profile=profile.name, dask_address=profile.dask_address, workers=args.workers,
            )
    except (KeyboardInterrupt, TerminationSignal) as stop:
        return _interrupted(stop, data_dir, run_name(manifest, args.preset), started)
    except RunLockedError as error:  # a run of the same manifest started at the same moment
        print(f"error: {error}", file=sys.stderr)
        return 2
    _print_summary(summary)
    return 0 if summary["finished"] or not summary["failed"] else 1


def _interrupted(stop: BaseException, data_dir: str, run: str, started: float) -> int:
    """One line on a run stopped by Ctrl-C or SIGTERM, from the summary it wrote (not an earlier
    run's); returns 128 + the signal's number, as a shell reports a signal."""
    import json
    import signal

    from stores.outputs import RunOutputs

    number = getattr(stop, "signal", signal.SIGINT)
    outputs = RunOutputs(data_dir, run)
    try:
        written = outputs.summary_json.modified_at()
        if written is not None and written < started - 1.0:
            raise FileNotFoundError("the summary is an earlier run's")
        summary = json.loads(outputs.summary_json.read_text())
        counts = (f"{len(summary['finished'])} finished, {len(summary['failed'])} failed, "
                  f"{len(summary.get('interrupted', []))} not finished; reports in {outputs.folder}")
    except (OSError, ValueError, KeyError):
        counts = "stopped before any row settled"
    print(f"error: run {run} interrupted by {signal.Signals(number).name}: {counts}", file=sys.stderr, flush=True)
    return 128 + int(number)


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
        alias = "production" if model["promoted"] else f"not promoted ({model['registration']['reason']})"
        print(f"  {key:<10} {model['model']} v{model['version']}: {model['steps']} steps in {model['seconds']:.0f} s; "
              f"{metrics}; {alias}")
    for model in (result.get("style") or {}).values():
        alias = "production" if model["promoted"] else f"not promoted ({model['registration']['reason']})"
        print(f"  style      {model['model']} v{model['version']}: {model['steps']} steps in {model['seconds']:.0f} s; "
              f"Gram x{model['final_gram_loss_ratio']:.2f} of optimisation's, landmark error "
              f"{model['final_network_landmark_error']:.4f} vs {model['final_optimisation_landmark_error']:.4f}; {alias}")


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

    print(f"train: config {args.config} on {args.device}; data {', '.join(data)}; output {data_dir}", flush=True)
    result = train(
        data=[str(Path(path).resolve()) for path in data], config=args.config, device=args.device,
        data_dir=str(data_dir), overrides=overrides, resume=not args.restart,
        profile=profile.name, dask_address=profile.dask_address, workers=args.workers)
    _print_training(result)
    from stores.tracking import tracking_uri

    print(f"mlflow: mlflow ui --backend-store-uri {tracking_uri(data_dir)}")
    return 0


def synthesize_command(args: argparse.Namespace) -> int:
    """Render a labelled synthetic face data set; exits 1 when its labels fail their checks."""
    from pydantic import ValidationError

    from stores.synthetic_store import DataSetMismatch, SyntheticStore
    from tasks.common.errors import AvatarInputError
    from tasks.synthesize.config import SynthesisConfig
    from tasks.synthesize.plan import dataset_folder, plan_data_set, production_generators
    from tasks.synthesize.shape import shape_model_record

    settings = {"resolution": args.resolution, "cycles_samples": args.cycles_samples,
                "samples_per_shard": args.samples_per_shard, "shape_variation": args.shape_variation,
                "image_format": args.format}
    try:  # everything that can be checked before a server starts (and before Prefect loads), each one line
        dataset_dir = dataset_folder(args.data_dir, args.name)
        models = production_generators(DataLocation(args.data_dir).url, args.portraits)
        config = SynthesisConfig(**settings)
        identities, _, planned = plan_data_set(args.portraits, args.identities, args.samples_per_identity,
                                               args.seed, config, models, args.backgrounds,
                                               shape_model_record(DataLocation(args.data_dir).url, config.shape_variation))
        SyntheticStore(dataset_dir).check_settings(planned)
    except ValidationError as error:
        print("error: " + "; ".join(f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}"
                                    for e in error.errors()), file=sys.stderr)
        return 2
    except (AvatarInputError, DataSetMismatch) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    started = _start_run(args)
    if started is None:
        return 2
    data_dir, profile = started
    from flows.synthesize import synthesize

    faces = f"faces of {args.portraits}" if args.portraits else f"production GAN faces ({models})"
    print(f"synthesize: {len(identities)} identities ({faces}) x {args.samples_per_identity} samples at "
          f"{args.resolution}² into {dataset_dir}", flush=True)
    summary = synthesize(data_dir=str(data_dir), name=args.name,
                         portraits=DataLocation(args.portraits).url if args.portraits else None,
                         identities=args.identities, samples_per_identity=args.samples_per_identity, seed=args.seed,
                         config=settings, backgrounds=DataLocation(args.backgrounds).url if args.backgrounds else None,
                         profile=profile.name, dask_address=profile.dask_address,
                         workers=args.workers)
    print(f"\n  {summary['images']} images of {summary['identities']} identities in {summary['wall_seconds']:.0f} s "
          f"(render {summary['render_seconds']:.0f} s of worker time)")
    for stage, seconds in summary["stage_seconds"].items():
        print(f"  stage {stage:<12} {seconds:8.1f} s (sum over shards)")
    for key in ("splits", "emotions", "yaw_deg", "pitch_deg", "visible_landmarks", "class_share"):
        if key in summary:
            print(f"  {key:<18} {summary[key]}")
    for name, error in summary["failed_identities"].items():
        print(f"  skipped {name}: {error}")
    for message in summary["failed_checks"]:
        print(f"  label check failed: {message}", file=sys.stderr)
    print(f"data set: {summary['dataset']} (index {summary['index']}, labels {summary['labels']})")
    return 1 if summary["failed_checks"] else 0


def dataset_card_command(args: argparse.Namespace) -> int:
    """Write card.md and card_grid.png into a synthetic data set's folder."""
    from tasks.synthesize.card import write_card

    folder = DataLocation(args.folder)
    if not folder.join("index.parquet").exists() or not folder.join("labels.zarr", "zarr.json").exists():
        print(f"error: {folder} is not a finished synthetic data set (it lacks index.parquet or labels.zarr)",
              file=sys.stderr)
        return 2
    print(f"card: {write_card(folder.url)}")
    return 0


def serve_command(args: argparse.Namespace) -> int:
    """Start the Prefect server, Dask, MLflow, a worker and the deployments; block until Ctrl-C."""
    from infra.profiles import visible_gpu_devices
    from infra.serve import ServeConfig, serve
    quiet_environment()
    try:
        data_dir = _open_data_dir(args.data_dir)
    except (RuntimeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    home = local_state_dir(data_dir) / "serve"  # logs and the server's files stay on this machine
    gpus = visible_gpu_devices() if args.gpus is None else tuple(d for d in args.gpus.split(",") if d)
    deployment_env = _deployment_variables(args, data_dir, home)
    from infra.automations import FailureAutomationConfig

    failures = FailureAutomationConfig.from_environment()
    config = ServeConfig(host=args.host, prefect_port=args.prefect_port, mlflow_port=args.mlflow_port,
                         scheduler_port=args.scheduler_port, dashboard_port=args.dashboard_port,
                         cpu_workers=args.workers, gpu_devices=gpus, deployment_env=deployment_env,
                         failure_threshold=args.failure_threshold or failures.threshold,
                         failure_window_s=args.failure_window or failures.within_seconds)
    from stores.tracking import ready_tracking_uri

    return serve(config, data_dir, ready_tracking_uri(data_dir), home)  # schema made before MLflow's server starts


def _deployment_variables(args: argparse.Namespace, data_dir: str, home: Path) -> dict[str, str]:
    """The variables prefect.yaml's deployment templates read: the data dir, the nightly manifest
    (the given one, else AVATARFLOW_NIGHTLY_MANIFEST, else the sample job), input roots, training
    data and the synthetic data set's portraits."""
    manifest = args.manifest or os.environ.get("AVATARFLOW_NIGHTLY_MANIFEST")
    if manifest:
        roots = [DataLocation(r).url for r in args.input_root] or [
            r for r in os.environ.get("AVATARFLOW_INPUT_ROOTS", "").split(",") if r]
        manifest = str(_manifest_argument(str(manifest)))
    else:  # the nightly deployment produces the sample job until given a manifest
        from avatarflow.samples import write_sample_manifest

        sample, roots = write_sample_manifest(home / "sample")
        manifest = str(sample)
    training = args.training_data or [d for d in os.environ.get("AVATARFLOW_TRAINING_DATA", "").split(",") if d]
    return {
        "AVATARFLOW_DATA_DIR": data_dir,
        "AVATARFLOW_NIGHTLY_MANIFEST": manifest,
        "AVATARFLOW_SYNTHETIC_PORTRAITS": os.environ.get("AVATARFLOW_SYNTHETIC_PORTRAITS") or _default_portraits(),
        "AVATARFLOW_INPUT_ROOTS": ",".join(roots),
        "AVATARFLOW_TRAINING_DATA": ",".join(training or _default_training_data()),
    }


def deploy_command(args: argparse.Namespace) -> int:
    """Apply the work pool, the deployments of prefect.yaml and their failure automations to the
    server PREFECT_API_URL names (compose and Kubernetes run this once the server is up)."""
    from infra.automations import FailureAutomationConfig, apply_failure_automations
    from infra.serve import apply_deployments

    quiet_environment()
    url = configured_api_url()
    if not url or not is_healthy(url):
        print(f"error: deploy needs a running Prefect server in PREFECT_API_URL (now {url or 'unset'})", file=sys.stderr)
        return 2
    failures = FailureAutomationConfig.from_environment()
    try:
        data_dir = _open_data_dir(args.data_dir)
        variables = _deployment_variables(args, data_dir, local_state_dir(data_dir) / "serve")
        deployments = apply_deployments(args.work_pool, {"PREFECT_API_URL": url, **variables})
        automations = apply_failure_automations(deployments, failures, api_url=url)
    except (RuntimeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for name in deployments:
        print(f"deployment {name} on pool {args.work_pool}")
    print(f"{len(automations)} failure automation(s): pause after {failures.threshold} failed avatars of one run "
          f"within {failures.within_seconds:g} s")
    return 0


def _default_portraits() -> str:
    """The dataset-generation deployment's portraits: the shared sample portraits where they exist,
    else none (the deployment then draws faces of the production GAN)."""
    from avatarflow.samples import SHARED_SAMPLES

    folder = SHARED_SAMPLES / "portraits"
    return str(folder) if folder.is_dir() else ""


def _default_training_data() -> list[str]:
    from avatarflow.samples import default_training_data

    return default_training_data()


def main(argv: list[str] | None = None) -> int:
    try:  # the presets read settings from the environment (timeouts, limits): a bad value is one line
        from avatarflow.presets import PRESETS
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog="avatarflow", description="Talking 3D doubles from a manifest.")
    commands = parser.add_subparsers(dest="command", required=True)

    def run_options(sub: argparse.ArgumentParser, pipeline: bool = True) -> None:
        sub.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="store, outputs and MLflow: a path or fsspec URL (default $AVATARFLOW_DATA_DIR or ./avatarflow-data)")
        sub.add_argument("--dask-address", help="address of an existing dask scheduler (default: start a LocalCluster)")
        sub.add_argument("--profile", choices=["local", "gpu", "cluster"], help="execution profile (default: auto)")
        sub.add_argument("--workers", type=int, help="LocalCluster worker processes (default 2)")
        if pipeline:
            sub.add_argument("--preset", default="photo", choices=sorted(PRESETS),
                             help="pipeline preset (default photo)")
        sub.add_argument("--prefect-port", type=int, help="local Prefect server port (default 4200)")

    produce = commands.add_parser("produce", help="build, animate and render every row of a manifest")
    produce.add_argument("manifest", help="CSV or Parquet manifest: a path or fsspec URL")
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

    synthesis = commands.add_parser("synthesize", help="render a labelled synthetic face data set")
    synthesis.add_argument("--portraits", help="folder (path or URL) of portraits whose faces are the identities "
                                               "(default: faces of the production GAN)")
    synthesis.add_argument("--identities", type=int, help="the first N portraits (default: all), or N GAN faces")
    synthesis.add_argument("--samples-per-identity", type=int, default=4, help="renders of each identity (default 4)")
    synthesis.add_argument("--backgrounds", help="folder of images shown behind the heads, one drawn per sample "
                                                 "(default: the sky)")
    synthesis.add_argument("--resolution", type=int, default=512, help="image side in pixels (default 512)")
    synthesis.add_argument("--cycles-samples", type=int, default=2, help="path-tracing samples per pixel, denoised (default 2)")
    synthesis.add_argument("--samples-per-shard", type=int, default=16, help="renders per Dask task (default 16)")
    synthesis.add_argument("--seed", type=int, default=0, help="the same seed draws the same data set (default 0)")
    synthesis.add_argument("--shape-variation", type=float, default=1.0,
                           help="face-shape change along the training faces' main shape components, in standard "
                                "deviations (default 1; 0 keeps each face's own shape)")
    synthesis.add_argument("--format", choices=("png", "zarr"), default="png",
                           help="images as PNG files under images/, or one N×H×W×3 array in images.zarr (default png)")
    synthesis.add_argument("--name", default="faces", help="data set folder under DATA/synthetic (default faces)")
    run_options(synthesis, pipeline=False)

    card = commands.add_parser("dataset-card", help="write a synthetic data set's card: distributions, samples, provenance")
    card.add_argument("folder", help="the data set's folder, DATA/synthetic/<name> (a path or URL)")

    demo = commands.add_parser("demo", help="run produce on the bundled sample manifest")
    run_options(demo)

    server = commands.add_parser("server", help="start (or find) the local Prefect server and print its URL")
    server.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    server.add_argument("--prefect-port", type=int)

    service = commands.add_parser("serve", help="run avatarflow as a service: Prefect server, work pool and worker, "
                                                "deployments, MLflow UI, Dask scheduler and workers")
    service.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="store, outputs and MLflow (path or fsspec URL)")
    service.add_argument("--manifest", help="manifest of the nightly deployment, a path or fsspec URL "
                                            "(default: the sample job)")
    service.add_argument("--input-root", action="append", default=[], help="extra folder the manifest's inputs may come from")
    service.add_argument("--training-data", action="append", help="folder for the training deployment (default: the shared samples)")
    service.add_argument("--host", default="127.0.0.1", help="interface the servers bind to (default 127.0.0.1)")
    service.add_argument("--prefect-port", type=int, default=4200)
    service.add_argument("--mlflow-port", type=int, default=5000)
    service.add_argument("--scheduler-port", type=int, default=8786)
    service.add_argument("--dashboard-port", type=int, default=8787)
    service.add_argument("--workers", type=int, default=2, help="Dask CPU worker processes (default 2)")
    service.add_argument("--gpus", help="comma-separated CUDA devices, one Dask worker each (default: every visible GPU)")
    service.add_argument("--failure-threshold", type=int,
                         help="failed avatars of one run that pause its deployment (default 3, or AVATARFLOW_FAILURE_THRESHOLD)")
    service.add_argument("--failure-window", type=float,
                         help="window for that count, in seconds (default 600, or AVATARFLOW_FAILURE_WINDOW_SECONDS)")

    deploy = commands.add_parser("deploy", help="apply the work pool, the deployments of prefect.yaml and their failure "
                                              "automations to the server in PREFECT_API_URL")
    deploy.add_argument("--work-pool", default="avatarflow-local", help="process work pool (default avatarflow-local)")
    deploy.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="data dir of the deployments' runs (path or fsspec URL)")
    deploy.add_argument("--manifest", help="manifest of the nightly deployment (default: $AVATARFLOW_NIGHTLY_MANIFEST, "
                                           "else the sample job)")
    deploy.add_argument("--input-root", action="append", default=[], help="extra folder the manifest's inputs may come from")
    deploy.add_argument("--training-data", action="append", help="folder for the training deployment")

    args = parser.parse_args(argv)
    if args.command == "deploy":
        return deploy_command(args)
    if args.command == "serve":
        return serve_command(args)
    if args.command == "server":
        _prepare_prefect(DataLocation(args.data_dir).url, args.prefect_port)
        return 0
    if args.command == "train":
        return train_command(args)
    if args.command == "synthesize":
        return synthesize_command(args)
    if args.command == "dataset-card":
        return dataset_card_command(args)
    if args.command == "demo":
        from avatarflow.samples import write_sample_manifest

        from stores.model_registry import DIFFUSION_MODEL, GAN_MODEL, production_versions

        try:
            data_dir = _open_data_dir(args.data_dir)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        trained = None not in production_versions(data_dir, [GAN_MODEL, DIFFUSION_MODEL]).values()
        manifest, roots = write_sample_manifest(local_state_dir(data_dir) / "sample", with_generated=trained)
        if not trained:
            print("sample: no trained generator has passed its promotion gates yet, so the rows with generated "
                  "faces and the refined photo are left out; `avatarflow train --data-dir "
                  f"{args.data_dir}` adds them", flush=True)
        print(f"sample manifest: {manifest}", flush=True)
        return produce_command(args, manifest, roots)
    return produce_command(args, args.manifest, args.input_root)


if __name__ == "__main__":
    if __package__ is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
