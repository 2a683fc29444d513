"""Start or reuse one local Prefect server (sqlite), bound to 127.0.0.1.

Without a server, every Dask worker process would start its own ephemeral server on the same
sqlite file ("database is locked"), and the UI would show nothing useful.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

QUIET_ENVIRONMENT = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "DASK_LOGGING__DISTRIBUTED": "warning",
    # MediaPipe's C++ side logs every graph start at warning level.
    "GLOG_minloglevel": "2",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}
DEFAULT_PORT = 4200


def quiet_environment() -> None:
    """Telemetry off (offline it only logs errors) and Dask's chatter down to warnings."""
    for key, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(key, value)


def api_url(host: str, port: int) -> str:
    return f"http://{host}:{port}/api"


def configured_api_url() -> str | None:
    """The server PREFECT_API_URL names, if set. Read from the environment only: importing prefect
    here would freeze its settings before `use_server` sets the URL."""
    url = os.environ.get("PREFECT_API_URL", "").strip()
    return url.rstrip("/") or None


def is_healthy(url: str, timeout: float = 2.0, probe: str = "health") -> bool:
    """Whether the API answers `probe`: `health` (the process serves), or `ready` (its database answers too)."""
    try:
        with urllib.request.urlopen(f"{url}/{probe}", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def local_port(port: int | None = None) -> int:
    """The port of the local server: the one given, else AVATARFLOW_PREFECT_PORT, else 4200."""
    return port or int(os.environ.get("AVATARFLOW_PREFECT_PORT") or DEFAULT_PORT)


def ensure_server(home: Path, port: int | None = None, host: str = "127.0.0.1", wait_s: float = 90.0) -> str:
    """Return the API URL of a healthy server on host:port, starting one in the background if needed.

    The server keeps running after this process exits, so later runs reuse it.
    """
    port = local_port(port)
    url = api_url(host, port)
    if is_healthy(url):
        return url
    home.mkdir(parents=True, exist_ok=True)
    # Two commands starting on one data dir at once: the second waits, then finds the first's server.
    with open(home / "server.lock", "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if is_healthy(url):
            return url
        return _start_server(home, host, port, url, wait_s)


def _start_server(home: Path, host: str, port: int, url: str, wait_s: float) -> str:
    # The UI calls the API at PREFECT_UI_API_URL, which otherwise names the default port.
    env = {**os.environ, "PREFECT_HOME": str(home), **QUIET_ENVIRONMENT, "PREFECT_UI_API_URL": url}
    env.pop("PREFECT_API_URL", None)
    log = (home / "server.log").open("ab")
    prefect = Path(sys.executable).with_name("prefect")
    command = [str(prefect), "server", "start", "--host", host, "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    (home / "server.pid").write_text(str(process.pid))
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        # Ready, not just healthy: the first database connection costs a fresh server about 0.6 s,
        # paid here rather than by the first run's first request.
        if is_healthy(url, timeout=10.0, probe="ready"):
            return url
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited with code {process.returncode}; see {home / 'server.log'}")
        time.sleep(0.5)
    raise RuntimeError(f"prefect server did not become ready within {wait_s:.0f}s; see {home / 'server.log'}")


def stop_server(home: Path) -> bool:
    """Stop the server this module started with `home` (its process group); False if none runs."""
    import signal

    pid_file = home / "server.pid"
    if not pid_file.is_file():
        return False
    try:
        os.killpg(int(pid_file.read_text()), signal.SIGTERM)
    except (ProcessLookupError, PermissionError, ValueError):
        return False
    finally:
        pid_file.unlink(missing_ok=True)
    return True


def use_server(url: str, results_dir: Path) -> None:
    """Point this process (and the Dask workers it starts, which inherit it) at the server."""
    quiet_environment()
    os.environ["PREFECT_API_URL"] = url
    os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(results_dir))


PLAIN_HTTP_CA_FILE = "plain-http-ca.pem"


def skip_ca_bundle_on_plain_http(url: str, home: Path) -> bool:
    """Prefect builds a new TLS context for every API client it makes, loading a whole CA bundle
    (30–90 ms on two busy cores), and it makes two for every task run, also for an http:// API,
    which never uses TLS. For such an API, point PREFECT_API_SSL_CERT_FILE at a one-certificate
    bundle in `home`. Only for processes on this machine (the path is local): a run's own
    LocalCluster, not an external scheduler's workers. A value already set, or TLS verification
    turned off, is kept. True when it was set."""
    if (not url.startswith("http://") or os.environ.get("PREFECT_API_SSL_CERT_FILE")
            or os.environ.get("PREFECT_API_TLS_INSECURE_SKIP_VERIFY")):
        return False
    bundle = home / PLAIN_HTTP_CA_FILE
    if not bundle.is_file():
        import certifi

        text = Path(certifi.where()).read_text(encoding="ascii")
        end = "-----END CERTIFICATE-----"
        first = text[text.index("-----BEGIN CERTIFICATE-----"):text.index(end) + len(end)]
        home.mkdir(parents=True, exist_ok=True)
        partial = bundle.with_name(f"{bundle.name}.{os.getpid()}.tmp")
        partial.write_text(first + "\n", encoding="ascii")
        os.replace(partial, bundle)  # another command may write it at the same moment
    os.environ["PREFECT_API_SSL_CERT_FILE"] = str(bundle)
    return True


def without_flow_heartbeats():
    """Settings under which a flow run sends no heartbeats. Prefect's heartbeat thread sleeps in
    1 s steps and is joined when the flow ends, so it holds every flow's end for up to a second;
    no automation here reads the heartbeats."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    return temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})
