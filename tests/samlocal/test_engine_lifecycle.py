"""The engine's life on this machine: a first start from nothing, a SIGKILL, a restart that cleans up after
it, a stop that leaves nothing, and an engine that ends with the process that started it.

Each test runs an engine of its own, from a fresh state folder (what OPENTRACKING_SAM_CACHE names), beside
any other engine: its own socket, run folder, bridge and subnet. These tests need no base image: their
containers run this machine's own programs from a tiny imported image."""

from __future__ import annotations

import io
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from samlocal import engine as engines
from samlocal import host

IMAGE = "ot-lifecycle/host-usr:1"
# The engine's own stop waits up to STOP_TIMEOUT for dockerd; this bounds every other wait here.
DEADLINE = 60.0


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A stand-in for a checkout, with the engine's state folder inside it: the worst place it could be."""
    folder = tmp_path / "checkout"
    folder.mkdir()
    return folder


@pytest.fixture
def engine(checkout: Path) -> Iterator[engines.OwnEngine]:
    own = engines.OwnEngine(checkout / "state")
    try:
        yield own
    finally:
        own.stop()


def docker(own: engines.OwnEngine, *args: str, stdin: bytes | None = None) -> str:
    result = subprocess.run(
        ["docker", *args],
        env={**os.environ, "DOCKER_HOST": own.docker_host},
        input=stdin,
        capture_output=True,
        timeout=DEADLINE,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout.decode()


def import_host_image(own: engines.OwnEngine) -> None:
    """An image whose root holds only the links of a merged /usr: run with this machine's /usr mounted
    read-only, it has bash and sleep without a registry or a build."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name in ("usr", "etc", "tmp", "proc", "sys", "dev"):
            folder = tarfile.TarInfo(name)
            folder.type, folder.mode = tarfile.DIRTYPE, 0o755
            archive.addfile(folder)
        for name in ("bin", "sbin", "lib", "lib64"):
            link = tarfile.TarInfo(name)
            link.type, link.linkname = tarfile.SYMTYPE, f"usr/{name}"
            archive.addfile(link)
    docker(own, "import", "-", IMAGE, stdin=buffer.getvalue())


def run_on_host_usr(own: engines.OwnEngine, *command: str, detach: bool = False) -> str:
    mode = ["--detach"] if detach else ["--rm"]
    return docker(own, "run", *mode, "--volume", "/usr:/usr:ro", IMAGE, *command).strip()


def mounts_of(*folders: Path) -> list[str]:
    return [point for folder in folders for point in host.mounts_under(folder)]


def engine_pids(own: engines.OwnEngine) -> list[int]:
    found, _ = own.leftovers()
    return [process.pid for process in found]


def wait_for(condition, what: str, deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"waited {deadline:.0f} s for {what}", pytrace=False)
        time.sleep(0.2)


def test_first_start_from_nothing_gives_an_address_containers_reach(engine: engines.OwnEngine) -> None:
    # GIVEN no state folder, no run folder and no bridge of this engine
    assert not engine.state.exists()
    assert not engine.run_dir.exists()
    assert host.bridge_address(engine.bridge) is None
    docker0_before = Path("/sys/class/net/docker0").exists()

    # WHEN it starts for the first time
    engine.start()

    # THEN it answers, and its address is the IPv4 gateway of its own bridge, known to dockerd as such
    address = engine.host_address()
    gateway = ipaddress.IPv4Interface(f"{address}/24")
    assert gateway.ip in host.BRIDGE_RANGE
    reported = docker(
        engine, "network", "inspect", "bridge", "--format", "{{(index .IPAM.Config 0).Gateway}}"
    )
    assert reported.strip() == address
    # our engine never makes docker0 (a Docker of the machine's own may own it)
    assert Path("/sys/class/net/docker0").exists() == docker0_before
    # and nothing it mounted is visible on this machine, let alone under the checkout
    assert mounts_of(engine.state, engine.run_dir) == []

    # a container reaches this machine at that address
    received = threading.Event()
    with socket.socket() as listener:
        listener.bind((address, 0))
        listener.listen()
        listener.settimeout(DEADLINE)
        port = listener.getsockname()[1]

        def accept() -> None:
            connection, _ = listener.accept()
            connection.close()
            received.set()

        waiter = threading.Thread(target=accept, daemon=True)
        waiter.start()
        import_host_image(engine)
        run_on_host_usr(engine, "/bin/bash", "-c", f"exec 3<>/dev/tcp/{address}/{port}")
        waiter.join(DEADLINE)
    assert received.is_set()


def test_a_killed_engine_leaves_no_mount_and_the_next_start_cleans_up(
    checkout: Path, engine: engines.OwnEngine
) -> None:
    # GIVEN a running engine with a running container
    engine.start()
    import_host_image(engine)
    container = run_on_host_usr(engine, "/bin/sleep", "600", detach=True)
    dockerd = engine.pid()
    assert dockerd is not None

    # WHEN its dockerd is killed with SIGKILL, as a closed shell or a CI time limit kills it
    os.kill(dockerd, signal.SIGKILL)
    wait_for(lambda: host.process_state(dockerd) in (None, "Z"), "the killed dockerd to exit")
    host.reap(dockerd)

    # THEN no mount of it is left on this machine: the checkout holding its state can be deleted
    assert mounts_of(checkout, engine.run_dir) == []
    # (its container's shim and process still run: the next start must clean them up)
    leftovers = engine_pids(engine)
    assert leftovers, "the container's shim should have outlived dockerd"

    # WHEN the engine starts again
    engine.start()

    # THEN what the kill left is gone, and it is ready with its address
    assert all(host.process_state(pid) in (None, "Z") for pid in leftovers)
    ipaddress.IPv4Address(engine.host_address())
    # the killed container does not run any more (dockerd found it dead)
    assert container[:12] not in docker(engine, "ps", "--quiet")

    # WHEN it stops
    engine.stop()

    # THEN no process, zombie, mount, bridge or run folder of it remains, and the checkout goes with rm -rf
    assert engine_pids(engine) == []
    assert host.process_state(dockerd) is None
    assert mounts_of(checkout, engine.run_dir) == []
    assert host.bridge_address(engine.bridge) is None
    assert not Path(f"/sys/class/net/{engine.bridge}").exists()
    assert not engine.run_dir.exists()
    shutil.rmtree(checkout)
    assert not checkout.exists()


def test_stop_leaves_nothing(engine: engines.OwnEngine) -> None:
    # GIVEN a running engine with containers running and stopped
    engine.start()
    started = engine.pid()
    import_host_image(engine)
    run_on_host_usr(engine, "/bin/sleep", "600", detach=True)
    run_on_host_usr(engine, "/bin/true")
    assert len(engine_pids(engine)) >= 3  # dockerd, containerd, the shim (and sleep)

    # WHEN it stops
    report = engine.stop()

    # THEN nothing was left for the clean-up, and nothing of it remains: no process (the dockerd this process
    # started is collected, not a zombie), no mount, no bridge, no socket
    assert report == []
    assert engine_pids(engine) == []
    assert started is not None and host.process_state(started) is None
    assert mounts_of(engine.state, engine.run_dir) == []
    assert not Path(f"/sys/class/net/{engine.bridge}").exists()
    assert not engine.socket.exists()


def test_an_engine_bound_to_its_starter_ends_when_the_starter_is_killed(tmp_path: Path) -> None:
    # GIVEN an engine started, bound to itself, by a process that is then killed with SIGKILL (a test run
    # killed by its CI job's time limit gets no chance to stop anything)
    state = tmp_path / "state"
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import sys, time
                from pathlib import Path
                from samlocal.engine import OwnEngine
                OwnEngine(Path(sys.argv[1])).start(bound_to_caller=True)
                print("ready", flush=True)
                time.sleep(600)
                """
            ),
            str(state),
        ],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        stdout=subprocess.PIPE,
        text=True,
    )
    own = engines.OwnEngine(state)
    try:
        assert starter.stdout is not None
        assert starter.stdout.readline().strip() == "ready"
        assert own.answers()

        # WHEN the starter is killed
        starter.kill()
        starter.wait(DEADLINE)

        # THEN its engine stops by itself, leaving no process and no mount
        wait_for(lambda: engine_pids(own) == [], "the engine of a killed starter to stop")
        assert mounts_of(state, own.run_dir) == []
    finally:
        starter.kill()
        starter.wait(DEADLINE)
        own.stop()


def test_a_failed_debootstrap_starts_again_from_an_empty_root(tmp_path, monkeypatch) -> None:
    # A mirror that fails a download twice: the third attempt, from an empty root, builds it.
    root, attempts, pauses = tmp_path / "rootfs", [], []

    def flaky_run(command, what, timeout):
        assert not root.exists() or not any(root.iterdir())  # nothing left of the attempt before
        attempts.append(command)
        root.mkdir(parents=True, exist_ok=True)
        (root / f"partial-{len(attempts)}").touch()
        if len(attempts) < 3:
            raise engines.EngineUnavailable("debootstrap failed: W: Retrying failed download of login")

    monkeypatch.setattr(engines, "_run", flaky_run)
    engines._debootstrap(root, pause=pauses.append)
    assert len(attempts) == 3 and pauses == [5, 10]
    assert [p.name for p in root.iterdir()] == ["partial-3"]

    # and a mirror that never answers is reported after the last attempt
    def down(command, what, timeout):
        raise engines.EngineUnavailable("debootstrap failed: the mirror is down")

    monkeypatch.setattr(engines, "_run", down)
    with pytest.raises(engines.EngineUnavailable, match="the mirror is down"):
        engines._debootstrap(root, pause=pauses.append)
