"""What an engine leaves on this machine, found and removed: its processes, its mounts, its network bridge.

The engine's processes are found by what only they carry: their mount namespace (dockerd runs in one of its
own, which its containerd, shims and proxies share), the engine's state paths on their command lines, and
descent from either (a container's processes are children of its shim). Nothing else is ever signalled, so a
Docker engine this project did not start is never touched.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
NETWORK_INTERFACES = Path("/sys/class/net")
# The programs of a Docker engine: only these are matched by the state paths on their command lines (a shell
# or an editor that names one of those paths is not the engine).
ENGINE_PROGRAMS = ("setpriv", "unshare", "dockerd", "containerd", "containerd-shim", "docker-proxy", "runc")


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    state: str  # "Z" for a zombie: exited, not yet collected by its parent
    name: str
    command_line: str
    mount_namespace: str

    @property
    def alive(self) -> bool:
        return self.state != "Z"


def read_process(pid: int) -> Process | None:
    base = PROC / str(pid)
    try:
        stat = (base / "stat").read_text()
        command_line = (base / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None  # exited while we looked
    try:
        namespace = os.readlink(base / "ns" / "mnt")
    except OSError:
        namespace = ""
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split at the last ")".
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    state = fields[0]
    if state == "Z":
        # A multi-threaded program (dockerd, containerd: Go) whose main thread has exited shows "Z" while its
        # other threads still run; it has exited only when every thread has.
        state = next((task for task in _task_states(base) if task != "Z"), "Z")
    return Process(
        pid=pid,
        ppid=int(fields[1]),
        state=state,
        name=name,
        command_line=command_line,
        mount_namespace=namespace,
    )


def _task_states(base: Path) -> list[str]:
    states = []
    try:
        tasks = list((base / "task").iterdir())
    except OSError:
        return states
    for task in tasks:
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        states.append(stat[stat.rindex(")") + 2 :].split()[0])
    return states


def processes() -> list[Process]:
    found = []
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (process := read_process(int(entry.name))) is not None:
            found.append(process)
    return found


def process_state(pid: int) -> str | None:
    """The state letter of a process ("Z" for a zombie), or None when there is no such process."""
    process = read_process(pid)
    return None if process is None else process.state


def mount_namespace_of(pid: int) -> str:
    return os.readlink(PROC / str(pid) / "ns" / "mnt")


def engine_processes(*, namespace: str | None, markers: Iterable[str]) -> list[Process]:
    """Every live process of one engine: in its mount namespace, or naming one of its state paths on its
    command line, and every descendant of those (containers run in namespaces of their own)."""
    everything = processes()
    own_namespace = mount_namespace_of(os.getpid())
    markers = tuple(markers)
    ours = {
        process.pid
        for process in everything
        if process.alive
        and process.pid != os.getpid()
        and (
            (namespace and namespace != own_namespace and process.mount_namespace == namespace)
            or (
                process.name.startswith(ENGINE_PROGRAMS)
                and any(marker in process.command_line for marker in markers)
            )
        )
    }
    children: dict[int, list[int]] = {}
    for process in everything:
        children.setdefault(process.ppid, []).append(process.pid)
    pending = list(ours)
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in ours:
                ours.add(child)
                pending.append(child)
    return [process for process in everything if process.pid in ours and process.alive]


def reap(pid: int) -> None:
    """Collect an exited child of this process, so no zombie stays behind; anyone else's is its parent's."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def wait_until_gone(pids: Iterable[int], deadline: float) -> list[int]:
    """Wait (bounded) until none of these runs; the ones still running at the deadline."""
    pids = list(pids)
    while True:
        running = [pid for pid in pids if process_state(pid) not in (None, "Z")]
        if not running or time.monotonic() >= deadline:
            for pid in pids:
                reap(pid)
            return running
        time.sleep(0.1)


def kill_all(pids: Iterable[int], *, timeout: float = 10.0) -> list[int]:
    """SIGKILL each process and wait (bounded) until it is gone; the pids that would not go."""
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return wait_until_gone(pids, time.monotonic() + timeout)


def _tool(*command: str) -> subprocess.CompletedProcess:
    """One of the system's tools (util-linux, iproute2), bounded in time; its result, never an exception."""
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)  # noqa: S603


# --- mounts -----------------------------------------------------------------------------------------


def _unescape(field: str) -> str:
    # /proc/mounts writes space, tab, newline and backslash in octal
    for code, character in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, character)
    return field


def mounts_under(folder: Path) -> list[str]:
    """Mount points at or under `folder` in this process's mount namespace, deepest first."""
    prefix = str(folder).rstrip("/")
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = _unescape(line.split()[1])
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return sorted(set(found), key=lambda point: (-point.count("/"), point))


def unmount_all(points: list[str]) -> list[str]:
    """Detach each mount point (lazily: busy ones too); the ones that would not go."""
    failed = []
    for point in points:
        result = _tool("umount", "--lazy", point)
        if result.returncode != 0 and point in mounts_under(Path(point)):
            failed.append(point)
    return failed


# --- the engine's network bridge --------------------------------------------------------------------

# The engine's containers live on a bridge of its own with a /24 from this range, chosen where nothing on this
# machine routes yet. The bridge carries its gateway address before dockerd starts, so the address containers
# reach this machine at is known from the first start on (dockerd's default bridge reports no gateway until
# its second start), and engines of other checkouts, or a system Docker on docker0, can run beside it.
BRIDGE_RANGE = ipaddress.ip_network("172.29.0.0/16")


def _ip(*args: str) -> list[dict]:
    result = _tool("ip", "-json", *args)
    if result.returncode != 0:
        raise OSError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return json.loads(result.stdout or "[]")


def _ip_change(*args: str) -> None:
    result = _tool("ip", *args)
    if result.returncode != 0:
        raise OSError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")


def bridge_address(name: str) -> ipaddress.IPv4Interface | None:
    """The bridge's IPv4 address with its prefix, or None when there is no such bridge or it has none."""
    if not (NETWORK_INTERFACES / name).exists():
        return None
    for link in _ip("-4", "address", "show", "dev", name):
        for address in link.get("addr_info", []):
            if address.get("family") == "inet":
                return ipaddress.ip_interface(f"{address['local']}/{address['prefixlen']}")  # type: ignore[return-value]
    return None


def _networks_in_use() -> list[ipaddress.IPv4Network]:
    used = []
    for route in _ip("-4", "route", "show", "table", "all"):
        destination = route.get("dst", "")
        if destination and destination != "default":
            try:
                used.append(ipaddress.ip_network(destination, strict=False))
            except ValueError:
                continue  # "local", "broadcast" and such are not networks
    for link in _ip("-4", "address"):
        for address in link.get("addr_info", []):
            used.append(ipaddress.ip_interface(f"{address['local']}/{address['prefixlen']}").network)
    return [network for network in used if isinstance(network, ipaddress.IPv4Network)]


def create_bridge(name: str, seed: int) -> ipaddress.IPv4Interface:
    """The bridge `name`, up, with its gateway address: kept if it exists with one, else made with the first
    free /24 of BRIDGE_RANGE from `seed` on."""
    address = bridge_address(name)
    if address is not None:
        _ip_change("link", "set", name, "up")
        return address
    if not (NETWORK_INTERFACES / name).exists():
        _ip_change("link", "add", name, "type", "bridge")
    used = _networks_in_use()
    candidates = list(BRIDGE_RANGE.subnets(new_prefix=24))
    for index in range(len(candidates)):
        subnet = candidates[(seed + index) % len(candidates)]
        if not any(subnet.overlaps(network) for network in used):
            gateway = ipaddress.IPv4Interface(f"{subnet[1]}/{subnet.prefixlen}")
            _ip_change("address", "add", str(gateway), "dev", name)
            _ip_change("link", "set", name, "up")
            return gateway
    raise OSError(f"no free /24 in {BRIDGE_RANGE} for the bridge {name}")


def delete_bridge(name: str) -> bool:
    """Remove the bridge if it exists; whether there was one."""
    if not (NETWORK_INTERFACES / name).exists():
        return False
    _ip_change("link", "delete", name, "type", "bridge")
    return True
