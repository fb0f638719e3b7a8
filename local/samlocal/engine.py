"""A Docker engine for `sam local`, on a machine that has none running and reaches no container registry.

    python -m samlocal.engine start     install what is missing, start the engine, build the base image
    python -m samlocal.engine env       the shell lines that point `docker` and `sam` at it
    python -m samlocal.engine stop      stop the engine and every container in it

Which engine (OPENTRACKING_SAM_ENGINE): `auto` (default) uses our engine if it already runs, else a Docker
that already answers (with AWS's own base images, pulled by SAM), else starts our own; `own` or `system`
forces one.

Our own engine is Debian's dockerd with its data under .local/samlocal (so images survive between runs), its
socket beside it, no iptables rules (containers reach this machine through the bridge, SAM reaches them
through ports published on 127.0.0.1). Its base image is Lambda-like and built offline: a Debian root file
system (debootstrap), this machine's CPython 3.13 under /var/lang, awslambdaric and boto3 from the package
index under /var/runtime, and /var/runtime/bootstrap. SAM adds its own Runtime Interface Emulator and the
layer on top.

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
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from devstack.template import ROOT, load_template

CACHE = Path(os.environ.get("OPENTRACKING_SAM_CACHE", str(ROOT / ".local" / "samlocal")))
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


class EngineUnavailable(RuntimeError):
    """The engine cannot run here; the message says why and what to do."""


def log(message: str) -> None:
    print(f"[samlocal] {message}", file=sys.stderr, flush=True)


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


def _socket_path() -> Path:
    # A unix socket path has at most 107 bytes; a deep checkout falls back to a short one in /tmp.
    path = CACHE / "docker.sock"
    if len(str(path)) < 100:
        return path
    return Path(tempfile.gettempdir()) / f"ot-samlocal-{_short_hash(str(CACHE))}.sock"


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def own_docker_host() -> str:
    return f"unix://{_socket_path()}"


def own_engine_answers() -> bool:
    return _answers(own_docker_host())


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


# --- system packages and emulation ------------------------------------------------------------------


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise EngineUnavailable(
            f"{what} needs root (dockerd creates mounts and a network bridge). Run as root, or start a "
            "Docker engine yourself: then `sam local` uses AWS's own base images "
            "(OPENTRACKING_SAM_ENGINE=system)."
        )


def install_system_packages() -> None:
    wanted = {"dockerd": "docker.io", "debootstrap": "debootstrap"}
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


# --- the engine -------------------------------------------------------------------------------------


def _pid() -> int | None:
    try:
        pid = int((CACHE / "dockerd.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
    # A zombie has exited already; only its parent has not collected it yet.
    return None if state == "Z" else pid


def _start_dockerd(storage_driver: str) -> subprocess.Popen:
    socket = _socket_path()
    socket.unlink(missing_ok=True)
    # The engine's own state (containerd's sockets) needs a short path too.
    exec_root = Path(tempfile.gettempdir()) / f"ot-samlocal-{_short_hash(str(CACHE))}"
    command = [
        "dockerd",
        f"--data-root={CACHE / 'docker'}",
        f"--exec-root={exec_root}",
        f"--pidfile={CACHE / 'dockerd.pid'}",
        f"--host=unix://{socket}",
        f"--storage-driver={storage_driver}",
        # No firewall rules on a shared machine: containers reach this machine through the bridge, SAM
        # reaches containers through ports published on 127.0.0.1 (docker's userland proxy).
        "--iptables=false",
        "--ip6tables=false",
    ]
    with (CACHE / "dockerd.log").open("ab") as output:
        return subprocess.Popen(  # noqa: S603 - fixed program
            command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )


def start_own_engine() -> str:
    """Start dockerd (overlay2, else vfs where overlay mounts are not allowed); return its DOCKER_HOST."""
    docker_host = own_docker_host()
    if _answers(docker_host):
        return docker_host
    running = _pid()
    if running is not None:
        # Ours runs (or is still starting): wait for it, never start a second one beside it.
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and _pid() is not None:
            if _answers(docker_host):
                return docker_host
            time.sleep(0.5)
        raise EngineUnavailable(
            f"dockerd (pid {running}) runs but does not answer on {docker_host}: "
            f"`make sam-local-stop` stops it; its log is {CACHE / 'dockerd.log'}"
        )
    _require_root("starting a Docker engine")
    install_system_packages()
    register_emulation()
    CACHE.mkdir(parents=True, exist_ok=True)
    for storage_driver in ("overlay2", "vfs"):
        log(f"starting dockerd ({storage_driver}), data in {CACHE / 'docker'}")
        process = _start_dockerd(storage_driver)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            if _answers(docker_host):
                return docker_host
            time.sleep(0.5)
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    tail = (CACHE / "dockerd.log").read_text(errors="replace")[-3000:]
    raise EngineUnavailable(f"dockerd did not start; the end of {CACHE / 'dockerd.log'}:\n{tail}")


def stop_own_engine() -> None:
    """Remove every container of our engine, then stop it (bounded; SIGKILL as the last resort)."""
    docker_host = own_docker_host()
    if _answers(docker_host):
        containers = _docker(docker_host, "ps", "-aq").stdout.split()
        if containers:
            _docker(docker_host, "rm", "-f", *containers, timeout=120, check=False)
    pid = _pid()
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if _pid() is None:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


def bridge_gateway(docker_host: str) -> str:
    result = _docker(
        docker_host, "network", "inspect", "bridge", "--format", "{{(index .IPAM.Config 0).Gateway}}"
    )
    return result.stdout.strip()


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
        raise EngineUnavailable(f"{what} failed: {(result.stdout + result.stderr).strip()[-3000:]}")


def _build_root(root: Path) -> None:
    if shutil.which("debootstrap") is None:
        raise EngineUnavailable("building the base image needs debootstrap (Debian package debootstrap)")
    log(f"debootstrap {DEBIAN_SUITE} (minbase)")
    _run(
        ["debootstrap", "--variant=minbase", f"--include={','.join(ROOT_PACKAGES)}", DEBIAN_SUITE, str(root)],
        "debootstrap",
        timeout=900,
    )
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


def ensure_base_image(docker_host: str) -> str:
    """Build the base image unless the engine already has this exact one; return its tag."""
    tag = image_tag()
    if _docker(docker_host, "image", "inspect", tag, check=False).returncode != 0:
        started = time.monotonic()
        workdir = CACHE / "build"
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


def ensure_engine() -> Engine:
    """An engine `sam local` can use, started and prepared if need be (see the module docstring)."""
    choice = os.environ.get("OPENTRACKING_SAM_ENGINE", "auto")
    if choice not in ("auto", "own", "system"):
        raise EngineUnavailable(f"OPENTRACKING_SAM_ENGINE must be auto, own or system, not {choice!r}")
    own_host = own_docker_host()
    if choice == "system" or (choice == "auto" and not _answers(own_host) and _answers(None)):
        if not _answers(None):
            raise EngineUnavailable(
                "OPENTRACKING_SAM_ENGINE=system but no Docker engine answers `docker info`"
            )
        docker_host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        return Engine(
            docker_host=docker_host, invoke_image=None, host_address=bridge_gateway(docker_host), own=False
        )
    docker_host = start_own_engine()
    return Engine(
        docker_host=docker_host,
        invoke_image=ensure_base_image(docker_host),
        host_address=bridge_gateway(docker_host),
        own=True,
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m samlocal.engine", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "env", "stop"])
    action = parser.parse_args(argv).action
    try:
        if action == "stop":
            stop_own_engine()
            log("engine stopped")
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
