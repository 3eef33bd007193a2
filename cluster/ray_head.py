"""The embedded farm's own Ray head: its ports, temp dir, auth token, start and stop.

A farm started without `cluster.address` runs a Ray head of its own and never another's:
- its own ports (all free ones, chosen at start) and its own temp dir, recorded in
  `<data_dir>/ray/head.json`; it connects to that address only, never to Ray's
  auto-detected "current cluster", so a second Ray cluster on the machine is never joined;
- token authentication with a token of its own (`<data_dir>/keys/ray_auth_token`), given to
  Ray through RAY_AUTH_MODE / RAY_AUTH_TOKEN_PATH; `~/.ray/auth_token`, which other Ray
  clusters of the user read, is never written;
- stopping it ends the processes of that head alone (found by its temp dir); `ray stop
  --force`, which ends every Ray process of the host, is never used.
A farm given `cluster.address` joins that cluster with the caller's own Ray settings (auth
included) and never stops it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cameofarm.configs import FarmConfig

START_TIMEOUT_S = 300.0  # a backstop: a head that cannot start fails at once with Ray's error
STOP_GRACE_S = 10.0
# Ray Serve gives its HTTP proxy 5 s to say it is ready and 10 s per health check, then kills
# it: on a busy 2-core node the proxy was killed again and again and the API never came up.
# The farm's own head gives it a minute (only the embedded head: a joined cluster is yours).
_SERVE_PATIENCE = {
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60",
    "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "60",
}
# Ray starts its workers at niceness 15, as if they were background work. On a farm they are
# the work: every stage replica, the scheduler and the API. At 15 they starved behind any
# ordinary process on the node: beside two busy loops, the loops took 79 % of each core and
# the farm's workers a few percent (the test suite took 1 h 48 min instead of 27). The farm's
# own head runs them at 0. A joined cluster keeps its own setting, and so does an exported
# RAY_worker_niceness.
_WORKER_PRIORITY = {"RAY_worker_niceness": "0"}


class HeadError(RuntimeError):
    """The farm's own Ray head could not be started, reached or stopped; says what to do."""


class _Overloaded(HeadError):
    """`ray start` gave up waiting for its own raylet (a transient overload)."""


@dataclass(frozen=True)
class Head:
    address: str  # host:GCS port
    temp_dir: str
    ports: dict[str, int]


def _ray_cli() -> str:
    candidate = Path(sys.executable).parent / "ray"
    return str(candidate) if candidate.exists() else "ray"


def temp_dir_of(config: FarmConfig) -> Path:
    """The head's temp dir: short (Ray's Unix socket paths must fit in ~107 bytes) and one
    per data folder, so two farms never share one."""
    data = str(Path(config.data_dir).resolve())
    return (
        Path(tempfile.gettempdir())
        / f"cameofarm-ray-{hashlib.sha256(data.encode()).hexdigest()[:10]}"
    )


def _head_file(config: FarmConfig) -> Path:
    return Path(config.data_dir) / "ray" / "head.json"


def token_path(config: FarmConfig) -> Path:
    return Path(config.data_dir) / "keys" / "ray_auth_token"


def auth_env(config: FarmConfig, create: bool = False) -> dict[str, str]:
    """The environment that gives Ray this farm's token auth (empty when no token exists and
    `create` is false)."""
    path = token_path(config)
    if not path.is_file():
        if not create:
            return {}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{secrets.token_hex(3)}")
        tmp.write_text(secrets.token_hex(32))
        tmp.chmod(0o600)
        tmp.replace(path)
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(path.resolve())}


def use_auth(config: FarmConfig) -> None:
    """Make this process speak the farm's token auth to Ray (before `ray.init`).

    Ray reads RAY_AUTH_MODE / RAY_AUTH_TOKEN_PATH into a cached config when it is imported,
    so after setting them the cache is refreshed (Ray's own tests do the same).
    """
    env = auth_env(config)
    if not env:
        return
    os.environ.update(env)
    try:
        from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]
    except ImportError:  # a Ray without token auth: the variables are all it needs
        return
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def read_head(config: FarmConfig) -> Head | None:
    """The head this farm recorded at its last start, if any (it may have died since)."""
    try:
        data = json.loads(_head_file(config).read_text())
        return Head(str(data["address"]), str(data["temp_dir"]), dict(data["ports"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def reachable(address: str, timeout: float = 2.0) -> bool:
    """True when something accepts TCP connections at host:port (ray:// prefix allowed)."""
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout):
            return True
    except (OSError, ValueError):
        return False


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(n: int) -> list[int]:
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(int(s.getsockname()[1]))
    finally:
        for s in socks:
            s.close()
    return ports


def start_head(config: FarmConfig, attempts: int = 3) -> Head:
    """Start this farm's own Ray head on free ports; raise HeadError within START_TIMEOUT_S
    per attempt. Ray gives its raylet a fixed 30 s to register: on an overloaded machine that
    can pass, so such a start is cleaned up and tried again (`attempts` in all)."""
    for attempt in range(1, attempts + 1):
        try:
            return _start_head_once(config)
        except _Overloaded as exc:
            if attempt == attempts:
                raise HeadError(
                    f"Ray's node did not register in time, {attempts} times ({exc}); the machine "
                    "may be overloaded: free some CPU and run it again"
                ) from None
    raise AssertionError("unreachable")


def _start_head_once(config: FarmConfig) -> Head:
    c = config.cluster
    names = ("gcs", "client", "dashboard", "agent_listen", "agent_grpc", "metrics", "runtime_env")
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    if c.dashboard and c.dashboard_port:
        if not _port_free(c.dashboard_port):
            raise HeadError(
                f"port {c.dashboard_port} (cluster.dashboard_port) is taken; choose another, "
                "or 0 for any free port"
            )
        ports["dashboard"] = c.dashboard_port
    temp_dir = temp_dir_of(config)
    cmd = [
        _ray_cli(),
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={ports['gcs']}",
        f"--ray-client-server-port={ports['client']}",
        f"--dashboard-port={ports['dashboard']}",
        f"--dashboard-agent-listen-port={ports['agent_listen']}",
        f"--dashboard-agent-grpc-port={ports['agent_grpc']}",
        f"--metrics-export-port={ports['metrics']}",
        f"--runtime-env-agent-port={ports['runtime_env']}",
        f"--temp-dir={temp_dir}",
        f"--num-gpus={c.logical_gpus}",
        f"--object-store-memory={int(c.object_store_gb * 1024**3)}",
        f"--include-dashboard={'true' if c.dashboard else 'false'}",
        "--disable-usage-stats",
    ]
    if c.num_cpus is not None:
        cmd.append(f"--num-cpus={c.num_cpus}")
    env = {
        **_SERVE_PATIENCE,
        **_WORKER_PRIORITY,
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        **auth_env(config, create=True),
    }
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        stop_head(config, temp_dir=str(temp_dir))
        logs = temp_dir / "session_latest" / "logs"
        raise HeadError(
            f"Ray did not start within {START_TIMEOUT_S:g} s; see its logs in {logs}"
        ) from None
    if proc.returncode != 0:
        stop_head(config, temp_dir=str(temp_dir))
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        if "timed out during startup" in proc.stderr:
            raise _Overloaded(last)
        raise HeadError(f"`ray start --head` failed: {last}\n{proc.stderr[-1500:]}")
    head = Head(f"127.0.0.1:{ports['gcs']}", str(temp_dir), ports)
    path = _head_file(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(head.__dict__, indent=2))
    return head


def head_processes(temp_dir: str) -> list[int]:
    """PIDs of the Ray processes of the head whose temp dir this is (and of no other): those
    whose command line names it, and their descendants (Ray's workers rename themselves to
    `ray::Actor`, so only their parentage shows whose they are)."""
    import psutil

    mine: set[int] = set()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or ())
            if proc.info["pid"] == os.getpid() or temp_dir not in cmdline:
                continue
            mine.add(int(proc.info["pid"]))
            mine.update(child.pid for child in proc.children(recursive=True))
        except (psutil.Error, TypeError):
            continue
    mine.discard(os.getpid())
    return sorted(mine)


def stop_head(config: FarmConfig, temp_dir: str | None = None, grace: float = STOP_GRACE_S) -> int:
    """End this farm's Ray head processes (SIGTERM, then SIGKILL after `grace` seconds;
    `grace=0` kills at once, as a crash would); return how many there were. Processes of any
    other Ray cluster are left alone."""
    import psutil

    head = read_head(config)
    temp_dir = temp_dir or (head.temp_dir if head else str(temp_dir_of(config)))
    procs = []
    for pid in head_processes(temp_dir):
        with contextlib.suppress(psutil.Error):
            procs.append(psutil.Process(pid))
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM if grace > 0 else signal.SIGKILL)
    _gone, alive = psutil.wait_procs(procs, timeout=grace or STOP_GRACE_S)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=STOP_GRACE_S)
    _head_file(config).unlink(missing_ok=True)
    return len(procs)
