"""A Docker engine for `sam local`, on a machine that has none running and reaches no container registry.

    python -m samlocal.engine start     install what is missing, start the engine, build the base image
    python -m samlocal.engine env       the shell lines that point `docker` and `sam` at it
    python -m samlocal.engine stop      stop the engine: no process, container, mount or bridge of it stays
    python -m samlocal.engine clean     stop it, then delete its state (images included)

Which engine (OPENTRACKING_SAM_ENGINE): `auto` (default) uses our engine if it already runs, else a Docker
that already answers (with AWS's own base images, pulled by SAM), else starts our own; `own` or `system`
forces one.

Our own engine is Debian's dockerd. Its state lives outside any checkout, in
/var/lib/opentracking/samlocal/<hash of the checkout's path> (OPENTRACKING_SAM_CACHE overrides it), so images
survive between runs; its socket, pidfile and exec root are in /run/ot-sam-<hash of the state folder>.
dockerd runs in a mount namespace of its own: every mount it makes (its data root, overlays, network
namespaces) exists only there and goes when the engine's last process ends, however it ended, so no mount
is ever left on this machine, in a checkout or elsewhere. Its containers sit on a bridge of its own
(ot-<hash>, a free /24 of 172.29.0.0/16, see host.py), with no iptables rules: containers reach this machine
at the bridge's gateway address, SAM reaches containers through ports published on 127.0.0.1.

A start first cleans up after any earlier end it finds (a stale pidfile, processes of the engine left
running, mounts of its state folders from before they moved out of the checkout) and says what it cleaned.

Its base image is Lambda-like and built offline: a Debian root file system (debootstrap), this machine's
CPython 3.13 under /var/lang, awslambdaric and boto3 from the package index under /var/runtime, and
/var/runtime/bootstrap. SAM adds its own Runtime Interface Emulator and the layer on top.

The template's functions are arm64. SAM builds their image for arm64 and adds its arm64 emulator, and the
engine refuses a base image of another platform, so the base image is labelled with the functions'
architecture. On an x86_64 machine only the emulator (a static Go binary) runs under qemu-user; Python itself
is this machine's build, native and fast. The layer's pure-Python packages run either way; a package whose
compiled part is arm64-only would fall back or fail here (wrapt falls back to its pure-Python wrappers).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import ipaddress
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devstack.template import ROOT, load_template
from samlocal import host

IMAGE_REPOSITORY = "opentracking/lambda-python"
# The stable name the README uses; it always points at the newest build of the base image.
IMAGE_ALIAS = f"{IMAGE_REPOSITORY}:3.13"
IMAGE_REQUIREMENTS = Path(__file__).with_name("image-requirements.txt")
DEBIAN_SUITE = "bookworm"
# Shared libraries that the copied CPython's extension modules (ssl, hashlib, sqlite3, pyexpat, ctypes) load,
# beyond what the minimal base system has; ca-certificates for TLS to anything real.
ROOT_PACKAGES = ("libssl3", "libsqlite3-0", "libexpat1", "libffi8", "ca-certificates")
# Never copied into the image: the test suite, GUI and build-only parts of CPython (a third of its size).
PYTHON_EXCLUDED = (
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "_tkinter*",
    "_test*",
    "config-3.13-*",
    "libpython3.13.a",
    "include",
    "site-packages",
)
# Lambda's python3.13 runtime, as far as SAM's emulator needs it: the emulator runs this when the first
# invocation arrives, and the runtime interface client imports the handler. sys.path is Lambda's order.
BOOTSTRAP = """#!/bin/sh
export PYTHONPATH="/var/task:/opt/python/lib/python3.13/site-packages:/opt/python:/var/runtime"
exec /var/lang/bin/python3.13 -m awslambdaric "$_HANDLER"
"""
IMAGE_ENV = (
    "PATH=/var/lang/bin:/usr/local/bin:/usr/bin:/bin",
    "LD_LIBRARY_PATH=/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib",
    "LAMBDA_TASK_ROOT=/var/task",
    "LAMBDA_RUNTIME_DIR=/var/runtime",
    "LANG=C.UTF-8",
    "TZ=:/etc/localtime",
)
# Bump when the way the image is made changes in a way its other inputs do not show.
IMAGE_RECIPE_VERSION = "1"
DOCKER_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
QEMU_NAME = {"arm64": "aarch64", "amd64": "x86_64"}
START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0
# Where the engine kept its state before it moved out of checkouts: a start still cleans up what it left.
LEGACY_STATE = ROOT / ".local" / "samlocal"


class EngineUnavailable(RuntimeError):
    """The engine cannot run here; the message says why and what to do."""


def log(message: str) -> None:
    print(f"[samlocal] {message}", file=sys.stderr, flush=True)


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def default_state_root() -> Path:
    """OPENTRACKING_SAM_CACHE, else a folder of this checkout's own outside it (the engine needs root, so
    /var/lib; a user's state folder where only the machine's own Docker will be used)."""
    override = os.environ.get("OPENTRACKING_SAM_CACHE")
    if override:
        return Path(override).absolute()
    if os.geteuid() == 0:
        base = Path("/var/lib/opentracking/samlocal")
    else:
        base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "opentracking"
    return base / _short_hash(str(ROOT))


@dataclass(frozen=True)
class Engine:
    docker_host: str
    # --invoke-image for sam local (our base image), or None: SAM pulls AWS's own base images.
    invoke_image: str | None
    # Where containers reach this machine: the bridge's gateway address.
    host_address: str
    own: bool

    @property
    def environment(self) -> dict[str, str]:
        return {"DOCKER_HOST": self.docker_host}

    @property
    def sam_image_options(self) -> list[str]:
        return ["--invoke-image", self.invoke_image, "--skip-pull-image"] if self.invoke_image else []


def _docker(docker_host: str | None, *args: str, timeout: float = 60.0, check: bool = True, **kwargs):
    env = dict(os.environ)
    if docker_host:
        env["DOCKER_HOST"] = docker_host
    command = ["docker", *args]  # the docker client on PATH, as sam finds it
    result = subprocess.run(  # noqa: S603 - our own arguments
        command, env=env, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    if check and result.returncode != 0:
        raise EngineUnavailable(f"docker {' '.join(args)} failed: {result.stderr.strip()[-2000:]}")
    return result


def _answers(docker_host: str | None) -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return _docker(docker_host, "info", "--format", "{{.ID}}", timeout=15, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def function_architecture() -> str:
    """The docker architecture of the template's functions (Globals.Function.Architectures)."""
    architectures = load_template()["Globals"]["Function"].get("Architectures", ["x86_64"])
    return DOCKER_ARCH[architectures[0]]


def machine_architecture() -> str:
    return DOCKER_ARCH[platform.machine().lower()]


def usable_ipv4(address: str, where: str) -> str:
    """`address` if it is an IPv4 address containers can reach this machine at; else stop, saying where it
    came from (an empty one must never become an endpoint such as http://:5001)."""
    try:
        parsed = ipaddress.IPv4Address(address.strip())
    except ValueError:
        raise EngineUnavailable(f"{where} gave no usable IPv4 address ({address!r})") from None
    if parsed.is_unspecified or parsed.is_loopback or parsed.is_multicast:
        raise EngineUnavailable(f"{where} gave {parsed}, which containers cannot reach this machine at")
    return str(parsed)


# --- system packages and emulation ------------------------------------------------------------------


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise EngineUnavailable(
            f"{what} needs root (dockerd creates mounts and a network bridge). Run as root, or start a "
            "Docker engine yourself: then `sam local` uses AWS's own base images "
            "(OPENTRACKING_SAM_ENGINE=system)."
        )


def install_system_packages() -> None:
    wanted = {"dockerd": "docker.io", "debootstrap": "debootstrap", "unshare": "util-linux", "ip": "iproute2"}
    if function_architecture() != machine_architecture():
        wanted[f"qemu-{QEMU_NAME[function_architecture()]}-static"] = "qemu-user-static"
    missing = sorted({package for program, package in wanted.items() if shutil.which(program) is None})
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise EngineUnavailable(
            f"need the Debian packages {', '.join(missing)} (or their equivalents); this is not a "
            "Debian-like system, so install them yourself"
        )
    _require_root(f"installing {', '.join(missing)}")
    log(f"installing Debian packages: {' '.join(missing)}")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "text": True}
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
    ):
        result = subprocess.run(command, env=env, timeout=600, check=False, **quiet)  # noqa: S603
        if result.returncode != 0:
            raise EngineUnavailable(f"{' '.join(command)} failed: {result.stderr.strip()[-2000:]}")


def register_emulation() -> None:
    """Let the kernel run the functions' architecture through qemu-user (binfmt_misc), if it differs."""
    target = function_architecture()
    if target == machine_architecture():
        return
    qemu = QEMU_NAME[target]
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if (binfmt / f"qemu-{qemu}").exists():
        return
    if not (binfmt / "register").exists():
        mount = ["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)]
        subprocess.run(mount, check=False, timeout=30)  # noqa: S603 - fixed command
    rule = Path(f"/usr/lib/binfmt.d/qemu-{qemu}.conf")
    if not rule.exists() or not (binfmt / "register").exists():
        raise EngineUnavailable(
            f"the functions are {target} and this machine is {machine_architecture()}: SAM's {target} "
            f"emulator needs qemu-user through binfmt_misc ({rule} and {binfmt}/register), which are not "
            "available"
        )
    # The rule carries the F flag: the kernel keeps the interpreter open, so it works inside containers too.
    (binfmt / "register").write_text(rule.read_text().strip() + "\n")
    log(f"registered qemu-{qemu} for {target} programs")


# --- our engine -------------------------------------------------------------------------------------


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


@dataclass(frozen=True)
class OwnEngine:
    """Our dockerd and everything it keeps, found from its state folder alone."""

    state: Path

    @property
    def _key(self) -> str:
        return _short_hash(str(self.state))

    @property
    def run_dir(self) -> Path:
        # Short (unix socket paths have at most 107 bytes, and containerd and libnetwork put long names under
        # the exec root) and per boot, like /run/docker.
        return Path("/run") / f"ot-sam-{self._key}"

    @property
    def data_root(self) -> Path:
        return self.state / "docker"

    @property
    def socket(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "dockerd.pid"

    @property
    def namespace_file(self) -> Path:
        # dockerd's mount namespace and the boot it belongs to: after an unclean end, its processes are found
        # by it (a namespace id means nothing after a reboot).
        return self.run_dir / "mount-namespace"

    @property
    def log_file(self) -> Path:
        return self.state / "dockerd.log"

    @property
    def build_dir(self) -> Path:
        return self.state / "build"

    @property
    def bridge(self) -> str:
        return f"ot-{self._key[:8]}"  # network interface names have at most 15 characters

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    def answers(self) -> bool:
        return _answers(self.docker_host)

    def pid(self) -> int | None:
        """The running dockerd of this engine, per its pidfile (a zombie counts as stopped)."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        process = host.read_process(pid)
        if process is None or not process.alive or "dockerd" not in process.command_line:
            return None
        return pid

    def host_address(self) -> str:
        address = host.bridge_address(self.bridge)
        return usable_ipv4("" if address is None else str(address.ip), f"the engine's bridge {self.bridge}")

    # -- what an engine leaves behind

    def _recorded_namespace(self) -> str | None:
        try:
            boot, namespace = self.namespace_file.read_text().split()
        except (OSError, ValueError):
            return None
        return namespace if boot == _boot_id() else None

    def leftovers(self) -> tuple[list[host.Process], list[str]]:
        """Processes and mounts (in this mount namespace) of this engine, running or not."""
        markers = [str(self.run_dir) + "/", str(self.state) + "/", f"--bridge={self.bridge}"]
        found = host.engine_processes(namespace=self._recorded_namespace(), markers=markers)
        mounts = [*host.mounts_under(self.state), *host.mounts_under(self.run_dir)]
        if self.state == default_state_root():
            mounts += host.mounts_under(LEGACY_STATE)
        return found, mounts

    def clean_up(self) -> list[str]:
        """Remove every process, mount and file this engine left running or lying about; what was done."""
        done = []
        found, mounts = self.leftovers()
        if found:
            names = ", ".join(sorted(f"{process.name} ({process.pid})" for process in found))
            stubborn = host.kill_all(process.pid for process in found)
            done.append(f"stopped {len(found)} leftover processes: {names}")
            if stubborn:
                raise EngineUnavailable(f"processes {stubborn} of the engine at {self.state} would not stop")
        if mounts:
            stuck = host.unmount_all(mounts)
            done.append(f"unmounted {len(mounts)} leftover mounts: {', '.join(mounts)}")
            if stuck:
                raise EngineUnavailable(f"could not unmount {', '.join(stuck)}")
        for stale in (self.pidfile, self.socket, self.namespace_file):
            if stale.exists() or stale.is_symlink():
                stale.unlink()
                done.append(f"removed the stale {stale}")
        if host.delete_bridge(self.bridge):
            done.append(f"removed the bridge {self.bridge}")
        return done

    # -- start and stop

    def _spawn_dockerd(self, storage_driver: str, *, bound_to_caller: bool) -> subprocess.Popen:
        command = [
            # A mount namespace of its own (slave: it still sees what is mounted on this machine later).
            *("unshare", "--mount", "--propagation", "slave", "--"),
            "dockerd",
            f"--data-root={self.data_root}",
            f"--exec-root={self.run_dir / 'exec'}",
            f"--pidfile={self.pidfile}",
            f"--host={self.docker_host}",
            f"--storage-driver={storage_driver}",
            f"--bridge={self.bridge}",
            # No firewall rules on a shared machine: containers reach this machine through the bridge, SAM
            # reaches containers through ports published on 127.0.0.1 (docker's userland proxy).
            "--iptables=false",
            "--ip6tables=false",
        ]
        if bound_to_caller:
            # Whatever ends the caller (a test run killed by its CI job's limit) ends the engine too.
            command = ["setpriv", "--pdeathsig", "TERM", *command]
        with self.log_file.open("ab") as output:
            return subprocess.Popen(  # noqa: S603 - fixed programs, our own paths
                command,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def start(self, *, bound_to_caller: bool = False) -> str:
        """Start dockerd (overlay2, else vfs where overlay mounts are not allowed) after cleaning up after any
        earlier end; return its DOCKER_HOST once it answers and its bridge has its address."""
        if self.answers() and self.pid() is not None:
            return self.docker_host
        running = self.pid()
        if running is not None:
            # Ours runs (or is still starting): wait for it, never start a second one beside it.
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline and self.pid() is not None:
                if self.answers():
                    return self.docker_host
                time.sleep(0.5)
            raise EngineUnavailable(
                f"dockerd (pid {running}) runs but did not answer on {self.docker_host} within "
                f"{START_TIMEOUT:.0f} s: `make sam-local-stop` stops it; its log is {self.log_file}"
            )
        _require_root("starting a Docker engine")
        install_system_packages()
        register_emulation()
        for line in self.clean_up():
            log(f"cleaned up after an earlier end: {line}")
        self.state.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        gateway = host.create_bridge(self.bridge, seed=int(self._key, 16))
        for storage_driver in ("overlay2", "vfs"):
            log(f"starting dockerd ({storage_driver}), state in {self.state}, bridge {self.bridge} {gateway}")
            process = self._spawn_dockerd(storage_driver, bound_to_caller=bound_to_caller)
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline and process.poll() is None:
                if self.answers():
                    namespace = host.mount_namespace_of(process.pid)
                    self.namespace_file.write_text(f"{_boot_id()} {namespace}\n")
                    return self.docker_host
                time.sleep(0.5)
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
            self.clean_up()
            host.create_bridge(self.bridge, seed=int(self._key, 16))
        tail = self.log_file.read_text(errors="replace")[-3000:]
        raise EngineUnavailable(
            f"dockerd did not answer within {START_TIMEOUT:.0f} s; the end of {self.log_file}:\n{tail}"
        )

    def stop(self) -> list[str]:
        """Remove every container, stop dockerd (SIGTERM, then SIGKILL after STOP_TIMEOUT), and remove
        whatever is left of it (processes, mounts, bridge, files); what was done beyond the plain stop."""
        if self.answers():
            containers = _docker(self.docker_host, "ps", "-aq", check=False).stdout.split()
            if containers:
                _docker(self.docker_host, "rm", "-f", *containers, timeout=120, check=False)
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            if host.wait_until_gone([pid], time.monotonic() + STOP_TIMEOUT):
                log(f"dockerd ({pid}) did not stop within {STOP_TIMEOUT:.0f} s of SIGTERM: killing it")
                host.kill_all([pid])
        # What a stopped engine leaves by design goes quietly; anything else is reported.
        self.namespace_file.unlink(missing_ok=True)
        host.delete_bridge(self.bridge)
        done = self.clean_up()
        shutil.rmtree(self.run_dir, ignore_errors=True)
        return done

    def remove_state(self) -> None:
        """Stop, then delete everything the engine keeps (its images too)."""
        self.stop()
        shutil.rmtree(self.state, ignore_errors=True)
        if self.state == default_state_root():
            shutil.rmtree(LEGACY_STATE, ignore_errors=True)


def own_engine() -> OwnEngine:
    return OwnEngine(default_state_root())


def system_bridge_gateway(docker_host: str) -> str:
    """Where containers of a Docker we did not start reach this machine: the default bridge's gateway, or the
    address of its interface (a first start of dockerd reports no gateway for the bridge it created)."""
    network = json.loads(_docker(docker_host, "network", "inspect", "bridge").stdout)[0]
    for config in network.get("IPAM", {}).get("Config") or []:
        if config.get("Gateway"):
            return usable_ipv4(config["Gateway"], "the default bridge's gateway")
    interface = network.get("Options", {}).get("com.docker.network.bridge.name", "docker0")
    address = host.bridge_address(interface)
    return usable_ipv4("" if address is None else str(address.ip), f"the bridge interface {interface}")


# --- the base image ---------------------------------------------------------------------------------


def _python_home() -> Path:
    """This machine's CPython 3.13 (the interpreter running us, or the one behind our virtual environment)."""
    if sys.version_info[:2] != (3, 13):
        raise EngineUnavailable(
            "building the base image needs CPython 3.13 (Lambda's python3.13): run under it"
        )
    home = Path(sys.base_prefix)
    if not (home / "bin" / "python3.13").exists():
        raise EngineUnavailable(f"no python3.13 under {home} to copy into the base image")
    return home


def image_tag() -> str:
    """The base image's tag: a hash of everything it is made of, so changing any input rebuilds it."""
    recipe = {
        "version": IMAGE_RECIPE_VERSION,
        "suite": DEBIAN_SUITE,
        "packages": ROOT_PACKAGES,
        "python": sys.version,
        "python_home": str(_python_home()),
        "excluded": PYTHON_EXCLUDED,
        "requirements": IMAGE_REQUIREMENTS.read_text(),
        "bootstrap": BOOTSTRAP,
        "env": IMAGE_ENV,
        "architecture": function_architecture(),
    }
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    return f"{IMAGE_REPOSITORY}:3.13-{function_architecture()}-{digest}"


def _run(command: list[str], what: str, timeout: float) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)  # noqa: S603
    if result.returncode != 0:
        code = result.returncode
        ended = f"signal {-code}" if code < 0 else f"exit status {code}"
        output = (result.stdout.strip()[-1500:] + "\n" + result.stderr.strip()[-1500:]).strip()
        raise EngineUnavailable(f"{what} failed ({ended}): {output}")


DEBOOTSTRAP_ATTEMPTS = 3


def _debootstrap(root: Path, *, pause: Callable[[float], None] = time.sleep) -> None:
    """A Debian root file system in `root`. A package mirror fails a download now and then ("Retrying
    failed download", then debootstrap gives up): it starts again from an empty root a few times before
    the sam local tier is declared unavailable."""
    for attempt in range(1, DEBOOTSTRAP_ATTEMPTS + 1):
        log(f"debootstrap {DEBIAN_SUITE} (minbase), attempt {attempt} of {DEBOOTSTRAP_ATTEMPTS}")
        shutil.rmtree(root, ignore_errors=True)
        try:
            _run(
                # In a mount namespace of its own: the /proc and /sys it mounts in the new root never
                # outlive it.
                [
                    *("unshare", "--mount", "--propagation", "private", "--"),
                    *("debootstrap", "--variant=minbase", f"--include={','.join(ROOT_PACKAGES)}"),
                    *(DEBIAN_SUITE, str(root)),
                ],
                "debootstrap",
                timeout=900,
            )
            break
        except EngineUnavailable as exc:
            if attempt == DEBOOTSTRAP_ATTEMPTS:
                raise
            log(f"{str(exc).splitlines()[0][:200]}; trying again in {5 * attempt} s")
            pause(5 * attempt)


def _build_root(root: Path) -> None:
    if shutil.which("debootstrap") is None:
        raise EngineUnavailable("building the base image needs debootstrap (Debian package debootstrap)")
    _debootstrap(root)
    log("adding CPython 3.13, awslambdaric and boto3")
    home = _python_home()
    shutil.copytree(
        home, root / "var" / "lang", symlinks=True, ignore=shutil.ignore_patterns(*PYTHON_EXCLUDED)
    )
    (root / "var" / "lang" / "lib" / "python3.13" / "site-packages").mkdir()
    runtime = root / "var" / "runtime"
    _run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--target", str(runtime), "-r", str(IMAGE_REQUIREMENTS),
        ],
        "pip install into /var/runtime",
        timeout=600,
    )  # fmt: skip
    bootstrap = runtime / "bootstrap"
    bootstrap.write_text(BOOTSTRAP)
    bootstrap.chmod(0o755)
    for folder in ("var/task", "opt"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    # Smaller image, faster container starts: nothing at run time reads these.
    for folder in (
        "usr/share/doc",
        "usr/share/man",
        "usr/share/locale",
        "var/cache/apt",
        "var/lib/apt/lists",
    ):
        shutil.rmtree(root / folder, ignore_errors=True)


def _load_image(docker_host: str, root: Path, tag: str, workdir: Path) -> None:
    """`docker load` a one-layer image of `root`, labelled with the functions' architecture (see above:
    `docker import` would label it with this machine's)."""
    layer = workdir / "layer.tar"
    digest = hashlib.sha256()
    with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as archive:
        archive.add(root, arcname=".")
    with layer.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    config = json.dumps(
        {
            "architecture": function_architecture(),
            "os": "linux",
            "config": {"Env": list(IMAGE_ENV), "WorkingDir": "/var/task"},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{digest.hexdigest()}"]},
            "history": [{"created_by": "opentracking samlocal.engine (debootstrap + CPython 3.13)"}],
        }
    ).encode()
    config_name = f"{hashlib.sha256(config).hexdigest()}.json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": ["layer.tar"]}]).encode()
    image = workdir / "image.tar"
    with tarfile.open(image, "w") as archive:
        for name, data in ((config_name, config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        archive.add(layer, arcname="layer.tar")
    _docker(docker_host, "load", "--quiet", "--input", str(image), timeout=600)


def ensure_base_image(docker_host: str, build_dir: Path) -> str:
    """Build the base image unless the engine already has this exact one; return its tag."""
    tag = image_tag()
    if _docker(docker_host, "image", "inspect", tag, check=False).returncode != 0:
        started = time.monotonic()
        workdir = build_dir
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        try:
            _build_root(workdir / "rootfs")
            _load_image(docker_host, workdir / "rootfs", tag, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        log(f"built {tag} in {time.monotonic() - started:.0f} s")
        _remove_older_images(docker_host, keep=tag)
    _docker(docker_host, "tag", tag, IMAGE_ALIAS)
    return tag


def _remove_older_images(docker_host: str, keep: str) -> None:
    listed = _docker(docker_host, "images", IMAGE_REPOSITORY, "--format", "{{.Repository}}:{{.Tag}}")
    for name in listed.stdout.split():
        if name not in (keep, IMAGE_ALIAS):
            _docker(docker_host, "rmi", name, check=False)


# --- entry points -----------------------------------------------------------------------------------


def ensure_engine(*, bound_to_caller: bool = False) -> Engine:
    """An engine `sam local` can use, started and prepared if need be (see the module docstring).
    `bound_to_caller`: an engine started here stops when this process ends, however it ends."""
    choice = os.environ.get("OPENTRACKING_SAM_ENGINE", "auto")
    if choice not in ("auto", "own", "system"):
        raise EngineUnavailable(f"OPENTRACKING_SAM_ENGINE must be auto, own or system, not {choice!r}")
    own = own_engine()
    if choice == "system" or (choice == "auto" and not own.answers() and _answers(None)):
        if not _answers(None):
            raise EngineUnavailable(
                "OPENTRACKING_SAM_ENGINE=system but no Docker engine answers `docker info`"
            )
        docker_host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        return Engine(
            docker_host=docker_host,
            invoke_image=None,
            host_address=system_bridge_gateway(docker_host),
            own=False,
        )
    docker_host = own.start(bound_to_caller=bound_to_caller)
    return Engine(
        docker_host=docker_host,
        invoke_image=ensure_base_image(docker_host, own.build_dir),
        host_address=own.host_address(),
        own=True,
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m samlocal.engine", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "env", "stop", "clean"])
    action = parser.parse_args(argv).action
    own = own_engine()
    try:
        if action == "stop":
            for line in own.stop():
                log(line)
            log(f"engine stopped (its state stays in {own.state}; `make sam-local-clean` deletes it)")
            return 0
        if action == "clean":
            own.remove_state()
            log(f"engine stopped and {own.state} deleted")
            return 0
        engine = ensure_engine()
    except EngineUnavailable as problem:
        log(f"cannot run sam local here: {problem}")
        return 1
    print(f"export DOCKER_HOST={engine.docker_host}")
    if action == "start":
        image = f" --invoke-image {IMAGE_ALIAS} --skip-pull-image" if engine.invoke_image else ""
        log(f"ready: containers reach this machine at {engine.host_address}; sam local ...{image}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
