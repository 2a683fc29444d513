"""The container and cluster manifests (infra/Dockerfile, infra/compose.yaml, infra/k8s, the locks)
agree with each other and with the code: service names, ports, the work pool, the GPU resource,
the Debian packages, the pinned versions and the deployments' flows. Nothing here builds or starts
a container; the files are parsed and compared with the constants the code uses."""

from __future__ import annotations

import importlib
import inspect
import re
import shlex
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from infra.prefect_server import DEFAULT_PORT, QUIET_ENVIRONMENT, api_url

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
K8S = INFRA / "k8s"

# ---------------------------------------------------------------- parsing helpers

_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?P<sep>:?-)?(?P<default>[^}]*)\}")


def _compose_default(text: str) -> str:
    """Resolve compose interpolation as `docker compose` does with none of the variables set."""

    def default(match: re.Match) -> str:
        if match["sep"] is None:
            raise AssertionError(f"${{{match['name']}}} in infra/compose.yaml has no default")
        return match["default"]

    return _VARIABLE.sub(default, text.replace("$$", "\0")).replace("\0", "$")


def _interpolate(node):
    if isinstance(node, str):
        return _compose_default(node)
    if isinstance(node, list):
        return [_interpolate(item) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate(value) for key, value in node.items()}
    return node


@cache
def raw_compose() -> dict:
    return yaml.safe_load((INFRA / "compose.yaml").read_text())


@cache
def compose() -> dict:
    return _interpolate(raw_compose())


def service(name: str) -> dict:
    return compose()["services"][name]


def command(name: str) -> list[str]:
    spec = service(name)
    return list(spec.get("entrypoint") or []) + list(spec.get("command") or [])


def environment(spec: dict) -> dict[str, str]:
    env = spec.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def option(args: list[str], name: str) -> str:
    """The value after `name` in an argument list (`--port 4200`)."""
    assert name in args, f"{name} missing from {args}"
    return args[args.index(name) + 1]


def published_ports(spec: dict) -> list[tuple[str | None, int | None, int]]:
    """(host ip, host port, container port) of each published port, short or long syntax."""
    ports = []
    for entry in spec.get("ports") or []:
        if isinstance(entry, dict):
            ports.append((entry.get("host_ip"), int(entry["published"]) if entry.get("published") else None,
                          int(entry["target"])))
            continue
        parts = str(entry).split("/")[0].split(":")
        host_ip = parts[0] if len(parts) == 3 else None
        host_port = int(parts[-2]) if len(parts) >= 2 else None
        ports.append((host_ip, host_port, int(parts[-1])))
    return ports


@cache
def prefect_yaml() -> dict:
    return yaml.safe_load((REPO / "prefect.yaml").read_text())


def work_pool() -> str:
    pools = {deployment["work_pool"]["name"] for deployment in prefect_yaml()["deployments"]}
    assert len(pools) == 1, f"prefect.yaml's deployments use several work pools: {sorted(pools)}"
    return pools.pop()


def template_variables(text: str) -> set[str]:
    """Environment variables a Prefect deployment template reads: `{{ $NAME }}`."""
    return set(re.findall(r"\{\{\s*\$(\w+)\s*\}\}", text))


@cache
def k8s_documents() -> list[dict]:
    documents = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name.endswith("-values.yaml"):
            continue
        documents += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return documents


def k8s_resource(kind: str, name: str) -> dict:
    found = [doc for doc in k8s_documents() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"infra/k8s has {len(found)} {kind} named {name}"
    return found[0]


def k8s_values(chart: str) -> dict:
    return yaml.safe_load((K8S / f"{chart}-values.yaml").read_text())


def configmap() -> dict[str, str]:
    return {key: str(value) for key, value in k8s_resource("ConfigMap", "avatarflow-env")["data"].items()}


@cache
def dockerfile() -> list[tuple[str, str, str | None]]:
    """(instruction, arguments, stage name) per Dockerfile instruction, continuation lines joined
    and comment lines dropped as Docker does."""
    instructions, current, stage = [], "", None
    for line in (INFRA / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") or (not current and not line.strip()):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        keyword, _, arguments = (current + line).strip().partition(" ")
        current = ""
        keyword = keyword.upper()
        if keyword == "FROM":
            words = arguments.split()
            stage = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
        instructions.append((keyword, arguments.strip(), stage))
    return instructions


def dockerfile_env(stage: str | None = None) -> dict[str, str]:
    """What ENV sets in one named stage, or (None) in the final, unnamed one."""
    env = {}
    for keyword, arguments, in_stage in dockerfile():
        if keyword == "ENV" and in_stage == stage:
            env.update(word.split("=", 1) for word in shlex.split(arguments))
    return env


def run_commands() -> list[list[str]]:
    """Every shell command of every RUN, split into words."""
    commands = []
    for keyword, arguments, _ in dockerfile():
        if keyword == "RUN":
            commands += [shlex.split(part) for part in re.split(r"&&|;", arguments) if part.strip()]
    return commands


def setup_debian_packages() -> list[str]:
    """The DEBIAN_PACKAGES bash array of infra/setup.sh."""
    match = re.search(r"^DEBIAN_PACKAGES=\((.*?)\)", (INFRA / "setup.sh").read_text(), re.S | re.M)
    assert match, "infra/setup.sh defines no DEBIAN_PACKAGES array"
    return [word for line in match[1].splitlines() for word in line.split("#")[0].split()]


def read_lock(path: Path) -> tuple[dict[str, str], list[str]]:
    """({canonical name: version}, option lines) of a pip requirements/constraints file."""
    pins, options = {}, []
    for line in path.read_text().splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            options.append(line)
            continue
        name, separator, version = line.partition("==")
        assert separator, f"{path.name}: {line!r} is not pinned with =="
        pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins, options


# ---------------------------------------------------------------- compose

SERVICES = {"prefect", "mlflow", "postgres", "scheduler", "worker", "gpu-worker", "minio", "create-bucket",
            "prefect-worker", "cli"}
# Services that run flows or tasks get the whole avatarflow environment.
FLOW_SERVICES = ("worker", "gpu-worker", "prefect-worker", "cli")


def test_compose_has_every_service():
    assert SERVICES <= set(compose()["services"]), SERVICES - set(compose()["services"])


def test_every_published_port_binds_the_loopback():
    for name, spec in compose()["services"].items():
        for host_ip, _, target in published_ports(spec):
            assert host_ip == "127.0.0.1", f"{name} publishes {target} on {host_ip or 'every interface'}"


def test_prefect_server_port_and_urls_match_the_code():
    server = command("prefect")
    assert server[:3] == ["prefect", "server", "start"]
    assert int(option(server, "--port")) == DEFAULT_PORT
    [(_, host_port, target)] = published_ports(service("prefect"))
    assert target == DEFAULT_PORT
    assert environment(service("prefect"))["PREFECT_UI_API_URL"] == api_url("127.0.0.1", host_port)
    for name in FLOW_SERVICES:
        assert environment(service(name))["PREFECT_API_URL"] == api_url("prefect", DEFAULT_PORT), name


def test_prefect_server_database_is_postgres_under_a_name_prefect_reads():
    from prefect.settings.models.server.database import ServerDatabaseSettings

    aliases = {choice.upper() for choice in ServerDatabaseSettings.model_fields["connection_url"].validation_alias.choices
               if isinstance(choice, str)}
    env = environment(service("prefect"))
    [name] = [key for key in env if key in aliases]
    assert urlparse(env[name]).scheme == "postgresql+asyncpg"  # Prefect needs an async driver


def test_databases_exist_on_the_postgres_service():
    postgres = environment(service("postgres"))
    init_sql = [volume.split(":")[0] for volume in service("postgres")["volumes"]
                if "/docker-entrypoint-initdb.d" in volume]
    created = {postgres["POSTGRES_DB"]}
    for path in init_sql:
        created |= set(re.findall(r"CREATE DATABASE\s+(\w+)", (INFRA / path).read_text(), re.I))
    urls = [value for key, value in environment(service("prefect")).items() if key.endswith("CONNECTION_URL")]
    urls.append(environment(service("mlflow"))["MLFLOW_BACKEND_STORE_URI"])
    for url in urls:
        parsed = urlparse(url)
        assert parsed.hostname == "postgres" and (parsed.port or 5432) == 5432, url
        assert (parsed.username, parsed.password) == (postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"]), url
        assert parsed.path.lstrip("/") in created, f"{url}: database not created (have {sorted(created)})"
    assert len({urlparse(url).path for url in urls}) == len(urls), "Prefect and MLflow share one database"


def test_credentials_are_overridable_and_consistent():
    raw = (INFRA / "compose.yaml").read_text()
    secret_keys = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|ROOT_USER|POSTGRES_USER")
    for name, spec in raw_compose()["services"].items():
        for key, value in environment(spec).items():
            if secret_keys.search(key):
                assert re.fullmatch(r"\$\{\w+:-[^}]+\}", value), f"{name}.{key} is not a ${{VAR:-default}}"
            if "://" in value and "@" in value:  # credentials inside a URL
                userinfo = value.split("://", 1)[1].rsplit("@", 1)[0]
                assert re.fullmatch(r"\$\{\w+:-[^}]+\}:\$\{\w+:-[^}]+\}", userinfo), f"{name}.{key}"
    # One default per variable, or the database user in one place would not be the one in another.
    defaults: dict[str, set[str]] = {}
    for match in _VARIABLE.finditer(raw):
        defaults.setdefault(match["name"], set()).add(match["default"])
    assert {name: values for name, values in defaults.items() if len(values) > 1} == {}


def test_s3_store_bucket_endpoint_and_keys_agree():
    [bucket] = [arg.split("/", 1)[1] for arg in command("create-bucket") if arg.startswith("store/")]
    minio = environment(service("minio"))
    minio_port = option(command("minio"), "--address").rsplit(":", 1)[1]
    mlflow_artifacts = urlparse(option(command("mlflow"), "--artifacts-destination"))
    assert (mlflow_artifacts.scheme, mlflow_artifacts.netloc) == ("s3", bucket)
    alias = urlparse(environment(service("create-bucket"))["MC_HOST_store"])
    assert (alias.username, alias.password) == (minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"])
    assert (alias.hostname, str(alias.port)) == ("minio", minio_port)
    for name in (*FLOW_SERVICES, "mlflow"):
        env = environment(service(name))
        data_dir = urlparse(env.get("AVATARFLOW_DATA_DIR", f"s3://{bucket}"))
        assert (data_dir.scheme, data_dir.netloc) == ("s3", bucket), name
        for key in ("AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL"):
            if key in env:
                assert env[key] == f"http://minio:{minio_port}", f"{name}.{key}"
        assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (
            minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"]), name


def test_mlflow_server_answers_the_uri_the_clients_use():
    from mlflow.server.security_utils import is_allowed_host_header

    server = command("mlflow")
    assert server[:2] == ["mlflow", "server"] and "--serve-artifacts" in server
    port = int(option(server, "--port"))
    assert [target for _, _, target in published_ports(service("mlflow"))] == [port]
    allowed = option(server, "--allowed-hosts").split(",")
    for name in FLOW_SERVICES:
        uri = urlparse(environment(service(name))["AVATARFLOW_MLFLOW_TRACKING_URI"])
        assert (uri.scheme, uri.hostname, uri.port) == ("http", "mlflow", port), name
        assert is_allowed_host_header(allowed, uri.netloc), f"MLflow would reject Host {uri.netloc}"
    assert is_allowed_host_header(allowed, f"127.0.0.1:{port}")  # the published UI


def test_dask_scheduler_and_workers_agree():
    scheduler = command("scheduler")
    port, dashboard = int(option(scheduler, "--port")), int(option(scheduler, "--dashboard-address").rsplit(":", 1)[1])
    assert (port, dashboard) == (8786, 8787)
    assert {target for _, _, target in published_ports(service("scheduler"))} == {port, dashboard}
    address = f"tcp://scheduler:{port}"
    for name in FLOW_SERVICES:
        env = environment(service(name))
        assert env["AVATARFLOW_DASK_ADDRESS"] == address and env["AVATARFLOW_PROFILE"] == "cluster", name
    for name in ("worker", "gpu-worker"):
        worker = command(name)
        # The wrapper keeps glibc's malloc defaults in the nanny's workers (infra/dask_worker.py).
        assert worker[:3] == ["python", "-m", "infra.dask_worker"] and worker[3] == address, name
        assert option(worker, "--nthreads") == "1", name  # Blender and MediaPipe are bound to their thread
    assert importlib.util.find_spec("infra.dask_worker") is not None


def gpu_resource_names() -> set[str]:
    """The Dask resources a GPU task asks for, as infra.profiles annotates it."""
    import dask

    from infra.profiles import gpu_slot

    with gpu_slot(True):
        return set(dask.get_annotations()["resources"])


def advertised_resources(args: list[str]) -> dict[str, str]:
    if "--resources" not in args:
        return {}
    return dict(pair.split("=") for pair in option(args, "--resources").replace(",", " ").split())


def test_gpu_worker_advertises_the_resource_gpu_tasks_ask_for():
    names = gpu_resource_names()
    gpu = service("gpu-worker")
    assert set(advertised_resources(command("gpu-worker"))) == names
    assert advertised_resources(command("gpu-worker"))[next(iter(names))] == "1"  # one GPU per worker
    assert gpu.get("profiles") == ["gpu"]
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"] and int(device.get("count", 0)) == 1
    assert advertised_resources(command("worker")) == {}  # CPU workers advertise no GPU
    assert environment(service("worker"))["CUDA_VISIBLE_DEVICES"] == ""  # and see none
    assert "CUDA_VISIBLE_DEVICES" not in environment(gpu)
    for name in FLOW_SERVICES:  # GPU annotations are opt-in: no GPU worker runs by default
        assert environment(service(name))["AVATARFLOW_GPU_TASKS"] == "0", name


def test_prefect_worker_serves_the_work_pool_of_prefect_yaml():
    worker = command("prefect-worker")
    assert worker[:3] == ["prefect", "worker", "start"]
    assert option(worker, "--pool") == work_pool()
    assert option(worker, "--type") == "process"


def test_every_template_of_prefect_yaml_is_set_where_deployments_are_applied():
    image_env = dockerfile_env()
    variables = template_variables((REPO / "prefect.yaml").read_text())
    assert "AVATARFLOW_REPO" in variables and image_env["AVATARFLOW_REPO"] == workdir()
    for name in ("cli", "prefect-worker"):
        missing = variables - set(environment(service(name))) - set(image_env)
        assert not missing, f"{name} does not set {sorted(missing)}"
    assert not variables - set(configmap()) - set(image_env), "the k8s ConfigMap"


def source_text() -> str:
    files = [path for folder in ("avatarflow", "flows", "stores", "tasks", "infra")
             for path in (REPO / folder).rglob("*.py")]
    return "\n".join(path.read_text() for path in files) + (REPO / "prefect.yaml").read_text()


def test_every_avatarflow_variable_of_the_manifests_is_read_by_the_code():
    sources = source_text()
    names = {key for name in FLOW_SERVICES for key in environment(service(name))} | set(configmap())
    unread = sorted(name for name in names if name.startswith("AVATARFLOW_") and name not in sources)
    assert unread == []


def test_serve_uses_the_same_ports_and_pool():
    serve = pytest.importorskip("infra.serve")
    config = serve.ServeConfig()
    scheduler = command("scheduler")
    assert config.prefect_port == DEFAULT_PORT
    assert config.scheduler_port == int(option(scheduler, "--port"))
    assert config.dashboard_port == int(option(scheduler, "--dashboard-address").rsplit(":", 1)[1])
    assert config.mlflow_port == int(option(command("mlflow"), "--port"))
    assert config.work_pool == work_pool()


# ---------------------------------------------------------------- prefect.yaml


def test_prefect_yaml_entrypoints_are_flows_taking_their_parameters():
    from prefect import Flow

    for deployment in prefect_yaml()["deployments"]:
        module_name, _, name = deployment["entrypoint"].partition(":")
        # A module path, so workers can import what the flow's task graphs refer to.
        assert (REPO / (module_name.replace(".", "/") + ".py")).is_file(), deployment["entrypoint"]
        module = importlib.import_module(module_name)
        flow = getattr(module, name)
        assert isinstance(flow, Flow), f"{deployment['entrypoint']} is not a @flow"
        assert flow.name == name, f"{deployment['entrypoint']} is the flow {flow.name!r}: serve names it {name!r}"
        accepted = inspect.signature(flow.fn).parameters
        unknown = set(deployment.get("parameters") or {}) - set(accepted)
        assert not unknown, f"{deployment['name']}: {flow.name} takes no {sorted(unknown)}"


# ---------------------------------------------------------------- Dockerfile and locks


def workdir() -> str:
    return [arguments for keyword, arguments, _ in dockerfile() if keyword == "WORKDIR"][-1]


# Packages infra/setup.sh installs for the test suite alone, which the service image leaves out.
TEST_ONLY_PACKAGES = {"chromium"}  # the report's browser test; Ubuntu 22.04 has it only as a snap


def test_dockerfile_installs_the_debian_packages_of_setup_sh():
    installed = set()
    for words in run_commands():
        if words[:2] == ["apt-get", "install"]:
            installed |= {word for word in words[2:] if not word.startswith("-")}
    missing = [package for package in setup_debian_packages() if package not in installed | TEST_ONLY_PACKAGES]
    assert not missing, f"infra/Dockerfile does not install {missing}"


def test_dockerfile_python_is_the_one_the_project_requires():
    import tomllib

    required = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    version = re.fullmatch(r"==(\d+\.\d+)\.\*", required)[1]
    venv = [words for words in run_commands() if words[1:3] == ["-m", "venv"]]
    assert venv and venv[0][0] == f"python{version}"


def test_dockerfile_variants_install_their_locks():
    stages = {stage: arguments.split()[0] for keyword, arguments, stage in dockerfile() if keyword == "FROM" and stage}
    [variant] = [arguments for keyword, arguments, _ in dockerfile() if keyword == "ARG" and arguments.startswith("VARIANT=")]
    default = variant.split("=", 1)[1]
    final = [arguments for keyword, arguments, _ in dockerfile() if keyword == "FROM"][-1]
    assert final == "base-${VARIANT}" and f"base-{default}" in stages and "base-cpu" in stages
    assert default == "gpu"
    assert raw_compose()["x-avatarflow"]["build"]["args"]["VARIANT"] == "${AVATARFLOW_VARIANT:-gpu}"
    assert dockerfile_env("base-gpu")["AVATARFLOW_LOCK"] == "requirements-gpu.lock"
    assert dockerfile_env("base-cpu")["AVATARFLOW_LOCK"] == "requirements.lock"
    copied = {word for keyword, arguments, _ in dockerfile() if keyword == "COPY" for word in arguments.split()[:-1]}
    assert {"requirements.txt", "requirements.lock", "requirements-gpu.lock", "infra/requirements-service.txt"} <= copied
    [install] = [words for words in run_commands() if "-c" in words and "install" in words]
    assert option(install, "-c") == "$AVATARFLOW_LOCK"
    requirement_files = {install[i + 1] for i, word in enumerate(install) if word == "-r"}
    assert requirement_files == {"requirements.txt", "infra/requirements-service.txt"}
    # The CUDA base image and torch's CUDA build are the same CUDA release.
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn-runtime-ubuntu22\.04", stages["base-gpu"])
    assert match, stages["base-gpu"]
    cuda_tag = f"cu{match[1]}{match[2]}"
    pins, options = read_lock(REPO / "requirements-gpu.lock")
    assert pins["torch"].endswith(f"+{cuda_tag}")
    assert f"--extra-index-url https://download.pytorch.org/whl/{cuda_tag}" in options
    assert "PIP_EXTRA_INDEX_URL" not in dockerfile_env("base-gpu")  # the lock names its own index
    assert dockerfile_env("base-cpu")["PIP_EXTRA_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"


def test_dockerfile_environment_matches_the_code():
    env = dockerfile_env()
    missing = {key: value for key, value in QUIET_ENVIRONMENT.items() if env.get(key) != value}
    assert not missing, f"infra/Dockerfile lacks {missing}"
    assert env["PATH"].split(":")[0] == f"{workdir()}/.venv/bin"
    entrypoint = [arguments for keyword, arguments, _ in dockerfile() if keyword == "ENTRYPOINT"][-1]
    assert yaml.safe_load(entrypoint)[0] == "/usr/bin/tini"
    assert "tini" in {word for words in run_commands() if words[:2] == ["apt-get", "install"] for word in words}


def test_gpu_lock_is_written_from_the_cpu_lock():
    from infra import gpu_lock

    expected = gpu_lock.render((REPO / "requirements.lock").read_text())
    assert (REPO / "requirements-gpu.lock").read_text() == expected, \
        "requirements-gpu.lock is stale: run `python -m infra.gpu_lock`"


def test_gpu_lock_pins_what_the_cpu_lock_pins():
    cpu, _ = read_lock(REPO / "requirements.lock")
    gpu, _ = read_lock(REPO / "requirements-gpu.lock")
    assert set(gpu) == set(cpu), set(gpu) ^ set(cpu)
    differing = {name: (cpu[name], gpu[name]) for name in cpu if cpu[name] != gpu[name]}
    assert set(differing) == {"torch"}, differing
    assert gpu["torch"].split("+")[0] == cpu["torch"].split("+")[0]


def test_service_requirements_are_pinned_and_agree_with_the_lock():
    lock, _ = read_lock(REPO / "requirements.lock")
    service_pins, options = read_lock(INFRA / "requirements-service.txt")
    assert not options
    # What the lock already pins stays there alone, so the two cannot drift apart.
    assert not set(service_pins) & set(lock), sorted(set(service_pins) & set(lock))
    pins = {**lock, **service_pins}
    if "s3fs" in pins:  # an s3:// data dir; s3fs releases require fsspec of their own version
        assert pins["s3fs"] == pins["fsspec"]


# ---------------------------------------------------------------- Kubernetes


def compose_image() -> str:
    return compose()["x-avatarflow"]["image"]


def containers(resource: dict, path: tuple[str, ...]) -> list[dict]:
    node = resource
    for key in path:
        node = node[key]
    return node["containers"]


def test_k8s_environment_matches_compose():
    cluster_env = configmap()
    compose_env = environment(service("prefect-worker"))
    # The S3 keys live in the Secret avatarflow-s3, which infra/k8s/README.md has you create.
    secret_keys = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert set(cluster_env) == set(compose_env) - secret_keys
    readme = (K8S / "README.md").read_text()
    assert "secret generic avatarflow-s3" in readme
    assert all(f"--from-literal={key}=" in readme for key in secret_keys)
    # The values that name no host are the same; the hosts are the cluster's Service names.
    same = set(compose_env) - {"PREFECT_API_URL", "AVATARFLOW_DASK_ADDRESS", "AVATARFLOW_GPU_TASKS",
                               "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert {key: cluster_env[key] for key in same} == {key: compose_env[key] for key in same}
    server = k8s_values("prefect-server")
    assert server["service"]["port"] == server["service"]["targetPort"] == DEFAULT_PORT
    assert cluster_env["PREFECT_API_URL"] == api_url("prefect-server", DEFAULT_PORT)  # the chart's fullname
    worker = k8s_values("prefect-worker")["worker"]
    assert worker["selfHostedServerApiConfig"]["apiUrl"] == cluster_env["PREFECT_API_URL"]
    assert worker["extraEnvVarsCM"] == "avatarflow-env"


def test_k8s_dask_cluster_matches_compose():
    cluster = k8s_resource("DaskCluster", "avatarflow")
    [scheduler] = containers(cluster, ("spec", "scheduler", "spec"))
    assert scheduler["args"] == command("scheduler")
    ports = {port["name"]: port["port"] for port in cluster["spec"]["scheduler"]["service"]["ports"]}
    assert ports == {"tcp-comm": int(option(command("scheduler"), "--port")), "http-dashboard": 8787}
    # The operator names the scheduler Service <cluster>-scheduler.
    assert configmap()["AVATARFLOW_DASK_ADDRESS"] == f"tcp://{cluster['metadata']['name']}-scheduler:{ports['tcp-comm']}"
    [cpu] = containers(cluster, ("spec", "worker", "spec"))
    assert cpu["args"][:3] == ["python", "-m", "infra.dask_worker"] and option(cpu["args"], "--nthreads") == "1"
    assert advertised_resources(cpu["args"]) == {} and "nvidia.com/gpu" not in str(cpu.get("resources"))
    assert {"name": "CUDA_VISIBLE_DEVICES", "value": ""} in cpu["env"]


def test_k8s_gpu_workers_advertise_the_gpu_resource():
    group = k8s_resource("DaskWorkerGroup", "avatarflow-gpu")
    assert group["spec"]["cluster"] == k8s_resource("DaskCluster", "avatarflow")["metadata"]["name"]
    [gpu] = containers(group, ("spec", "worker", "spec"))
    assert set(advertised_resources(gpu["args"])) == gpu_resource_names()
    assert set(advertised_resources(gpu["args"]).values()) == {"1"}
    assert int(gpu["resources"]["limits"]["nvidia.com/gpu"]) == 1
    assert configmap()["AVATARFLOW_GPU_TASKS"] == "1"  # the cluster runs GPU workers, so tasks ask for them


def test_k8s_pods_get_the_environment_and_the_compose_image():
    image = compose_image()
    repository, _, tag = image.partition(":")
    pods = [containers(k8s_resource("DaskCluster", "avatarflow"), ("spec", "scheduler", "spec")),
            containers(k8s_resource("DaskCluster", "avatarflow"), ("spec", "worker", "spec")),
            containers(k8s_resource("DaskWorkerGroup", "avatarflow-gpu"), ("spec", "worker", "spec")),
            containers(k8s_resource("Deployment", "mlflow"), ("spec", "template", "spec"))]
    for [container] in pods:
        assert container["image"] == image, container["name"]
    for [container] in pods[1:]:
        refs = [next(iter(ref.values()))["name"] for ref in container.get("envFrom", [])]
        assert {"avatarflow-env", "avatarflow-s3"} <= set(refs), container["name"]
    assert k8s_values("prefect-worker")["worker"]["extraEnvVarsSecret"] == "avatarflow-s3"
    entrypoint = yaml.safe_load([a for k, a, _ in dockerfile() if k == "ENTRYPOINT"][-1])
    for values, key in ((k8s_values("prefect-server"), "server"), (k8s_values("prefect-worker"), "worker")):
        chart_image = values["global"]["prefect"]["image"] if key == "server" else values["worker"]["image"]
        assert (chart_image["repository"], str(chart_image["prefectTag"])) == (repository, tag), key
        # The charts default to the official image's entrypoint script, which this image lacks.
        assert values[key]["command"] == entrypoint, key


def test_k8s_prefect_worker_and_server():
    worker = k8s_values("prefect-worker")["worker"]
    assert worker["config"]["workPool"] == work_pool()
    assert worker["config"]["type"] == option(command("prefect-worker"), "--type")
    # Both databases come from the Secret the README has you create.
    readme = (K8S / "README.md").read_text()
    database = k8s_values("prefect-server")["externalDatabase"]
    assert k8s_values("prefect-server")["postgresql"]["enabled"] is False
    [container] = containers(k8s_resource("Deployment", "mlflow"), ("spec", "template", "spec"))
    [mlflow_db] = [var["valueFrom"]["secretKeyRef"] for var in container["env"] if var["name"] == "MLFLOW_BACKEND_STORE_URI"]
    assert database["existingSecret"] == mlflow_db["name"]
    assert f"secret generic {mlflow_db['name']}" in readme
    assert f"--from-literal={database['connectionStringSecretKey']}='postgresql+asyncpg://" in readme
    assert f"--from-literal={mlflow_db['key']}='postgresql://" in readme


def test_k8s_mlflow_matches_compose():
    [container] = containers(k8s_resource("Deployment", "mlflow"), ("spec", "template", "spec"))
    args = container["args"]
    for name in ("--port", "--artifacts-destination"):
        assert option(args, name) == option(command("mlflow"), name), name
    assert "--serve-artifacts" in args
    port = int(option(args, "--port"))
    [service_port] = k8s_resource("Service", "mlflow")["spec"]["ports"]
    assert service_port["port"] == port
    uri = urlparse(configmap()["AVATARFLOW_MLFLOW_TRACKING_URI"])
    assert (uri.hostname, uri.port) == ("mlflow", port)
    from mlflow.server.security_utils import is_allowed_host_header

    assert is_allowed_host_header(option(args, "--allowed-hosts").split(","), uri.netloc)
