"""Separate hosts on one machine, for the multi-node test: each host is a network namespace
(its own address on a bridge, like a machine on a LAN) and a mount namespace with its own
`/dev/shm` and its own private folder, so nothing a host writes there is seen by another.
The test process sits on the bridge too (the LAN's gateway) and runs the shared services.

Needs root and a kernel that lets it make namespaces, bridges and veth pairs (run inside
`../shared/bin/loopback`, as `make test` does, so the LAN never touches a real network)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

BRIDGE = "cf-lan"


class HostsUnavailable(RuntimeError):
    """This machine cannot make namespaced hosts (not root, or no bridge/veth support)."""


def _ip(*args: str, ns: int | None = None) -> None:
    argv = ["ip", *args] if ns is None else ["nsenter", "-t", str(ns), "-n", "ip", *args]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode:
        raise HostsUnavailable(f"`{' '.join(argv)}` failed: {done.stderr.strip()}")


def wait_for(what: str, ready: Callable[[], bool], limit_s: float) -> None:
    """Wait until `ready()` holds, at most `limit_s` seconds."""
    deadline = time.monotonic() + limit_s
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {limit_s:.0f} s")
        time.sleep(0.2)


@dataclass
class Host:
    name: str
    address: str
    holder: subprocess.Popen[bytes]  # holds the namespaces open
    private: Path  # a folder only this host sees (a tmpfs mounted over the same path)

    @property
    def pid(self) -> int:
        return self.holder.pid

    def _enter(self, argv: Sequence[str]) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-n", "-m", *argv]

    def run(
        self, argv: Sequence[str], env: dict[str, str], timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """Run a command on this host; its output comes back with it."""
        return subprocess.run(
            self._enter(argv), env=env, capture_output=True, text=True, timeout=timeout
        )

    def path(self, inside: Path) -> Path:
        """Where a path as this host sees it can be read from the test process."""
        return Path(f"/proc/{self.pid}/root") / inside.relative_to("/")

    def processes(self) -> list[int]:
        """Every process living in this host's network namespace."""
        try:
            mine = os.readlink(f"/proc/{self.pid}/ns/net")
        except OSError:
            return []
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.readlink(f"/proc/{entry}/ns/net") == mine:
                        found.append(int(entry))
                except OSError:
                    continue
        return found

    def kill(self) -> int:
        """kill -9 every process of the host at once, as when its power goes; return how many
        there were. The host's network goes with its last process."""
        pids = self.processes()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.holder.wait(30)
        wait_for(f"{self.name}'s processes to end", lambda: not self.processes(), 60)
        return len(pids)


class Lan:
    """A bridge in this namespace with the test process at `<subnet>.254`, and hosts on it."""

    def __init__(self, root: Path, subnet: str = "10.77.0") -> None:
        if os.geteuid() != 0:
            raise HostsUnavailable("making hosts needs root")
        self.root = root
        self.subnet = subnet
        self.gateway = f"{subnet}.254"
        self.hosts: list[Host] = []
        _ip("link", "add", BRIDGE, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", BRIDGE)
        _ip("link", "set", BRIDGE, "up")

    def host(self, name: str, number: int) -> Host:
        private = self.root / "host"  # the same path on every host, different contents
        private.mkdir(parents=True, exist_ok=True)
        script = (
            f"mount -t tmpfs tmpfs {private} && mount -t tmpfs tmpfs /dev/shm && "
            "ip link set lo up && echo up && exec sleep infinity"
        )
        holder = subprocess.Popen(
            ["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert holder.stdout is not None
        if holder.stdout.readline().strip() != b"up":
            holder.wait(10)
            err = holder.stderr.read().decode() if holder.stderr else ""
            raise HostsUnavailable(f"could not make host {name}: {err.strip()}")
        address = f"{self.subnet}.{number}"
        outside = f"cf-{number}"
        _ip(
            "link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", str(holder.pid)
        )
        _ip("link", "set", outside, "master", BRIDGE, "up")
        _ip("addr", "add", f"{address}/24", "dev", "eth0", ns=holder.pid)
        _ip("link", "set", "eth0", "up", ns=holder.pid)
        _ip("route", "add", "default", "via", self.gateway, ns=holder.pid)
        host = Host(name, address, holder, private)
        self.hosts.append(host)
        return host

    def close(self) -> None:
        for host in self.hosts:
            if host.holder.poll() is None:
                host.kill()
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)
