"""AWS for functions that `sam local` runs in containers: moto in server mode on the address containers reach
this machine at (the engine's bridge gateway), every stateful resource of template.yaml provisioned in it, and
what `sam local` needs to point the functions at it. Beside it, on the same address, the local DNS server
plays the customers' DNS provider and is the containers' only resolver (--container-dns), so nothing in
them looks up or reaches a name outside this machine.

    python -m samlocal.backend      (what `make sam-local-aws` starts; Ctrl-C stops it)

Functions get the endpoint through the template's LocalAwsEndpoint parameter (which declares AWS_ENDPOINT_URL
only when it is set) and their resources' local names through --env-vars. Environment: AWS_PORT (5001).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import boto3

from devstack.dns_server import DnsServer
from devstack.provision import provision
from devstack.server import DEFAULT_API_KEY
from devstack.template import Stack
from samlocal.engine import IMAGE_ALIAS, EngineUnavailable, default_state_root, ensure_engine, log

ENDPOINT_PARAMETER = "LocalAwsEndpoint"


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@dataclass
class Backend:
    endpoint: str
    stack: Stack
    env_vars_file: Path
    server: object
    dns: DnsServer

    @property
    def parameter_overrides(self) -> str:
        return f"{ENDPOINT_PARAMETER}={self.endpoint}"

    @property
    def sam_options(self) -> list[str]:
        """What every `sam local` command needs to run the functions against this backend."""
        return [
            "--env-vars",
            str(self.env_vars_file),
            "--parameter-overrides",
            self.parameter_overrides,
            "--container-dns",
            self.dns.host,
        ]

    def client(self, service: str):
        return boto3.session.Session(
            aws_access_key_id="local",
            aws_secret_access_key="local",  # noqa: S106 - moto accepts any credentials
            region_name=self.stack.region,
        ).client(service, endpoint_url=self.endpoint)

    def resource(self, logical_id: str) -> str:
        return self.stack.ref(logical_id)

    def stop(self) -> None:
        self.server.stop()
        self.dns.stop()


def start_backend(host: str, state_dir: Path, *, port: int = 0, api_key: str = DEFAULT_API_KEY) -> Backend:
    """moto on host:port (a free port by default), provisioned from the template; env-vars file written."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per AWS call otherwise
    port = port or free_port(host)
    endpoint = f"http://{host}:{port}"
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    # Port 53: a container's resolv.conf names a server, never a port.
    dns = DnsServer(host=host, port=53).start()
    stack = Stack(parameter_overrides={ENDPOINT_PARAMETER: endpoint})
    backend = Backend(
        endpoint=endpoint, stack=stack, env_vars_file=state_dir / "env.json", server=server, dns=dns
    )
    session = boto3.session.Session(
        aws_access_key_id="local",
        aws_secret_access_key="local",  # noqa: S106 - moto accepts any credentials
        region_name=stack.region,
    )
    provision(stack, session, endpoint)
    # A deployment generates its account key; locally it is the same key `make run` uses.
    backend.client("secretsmanager").put_secret_value(
        SecretId=stack.ref("ApiKeysSecret"), SecretString=json.dumps({"account": api_key})
    )
    # Each function's template environment with local names (sam local keeps variables the template does
    # not declare out of the container, so only these can be set).
    variables = {logical_id: stack.function_environment(logical_id) for logical_id in stack.functions()}
    state_dir.mkdir(parents=True, exist_ok=True)
    backend.env_vars_file.write_text(json.dumps(variables, indent=2))
    return backend


def main() -> int:
    try:
        engine = ensure_engine()
    except EngineUnavailable as problem:
        log(f"cannot run sam local here: {problem}")
        return 1
    state = default_state_root()
    backend = start_backend(engine.host_address, state, port=int(os.environ.get("AWS_PORT", "5001")))
    options = [*backend.sam_options]
    if engine.invoke_image:
        options += ["--invoke-image", IMAGE_ALIAS, "--skip-pull-image"]
    options = shlex.join(options)
    print(
        f"ready: AWS (moto) at {backend.endpoint}. In another terminal:\n"
        f"  export DOCKER_HOST={engine.docker_host}\n"
        f"  .venv/bin/sam build\n"
        f"  .venv/bin/sam local invoke PixelFunction -e events/pixel_get.json {options}\n"
        f"  .venv/bin/sam local start-api --port 3001 {options}",
        flush=True,
    )
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with contextlib.suppress(KeyboardInterrupt):
        stopped.wait()
    backend.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
