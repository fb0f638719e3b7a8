"""The `sam local` tier: a real Docker engine (ours, or the machine's), `sam build`, and moto where the
functions' containers reach it. If the engine cannot start, every test here fails with the reason: this tier
never skips."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from devstack import bytecode
from devstack.template import ROOT
from samlocal import engine as engines
from samlocal.backend import Backend, start_backend

SAM = str(Path(sys.executable).with_name("sam"))
DOMAIN = "example.com"  # the domain every sample event in events/ is for


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/samlocal/" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.samlocal)


@dataclass(frozen=True)
class SamLocal:
    engine: engines.Engine
    backend: Backend
    template: Path  # the template `sam build` wrote, with every function and the layer built

    def environment(self) -> dict[str, str]:
        env = {
            **os.environ,
            **self.engine.environment,
            "SAM_CLI_TELEMETRY": "0",
            # The emulator's own log (START/END/REPORT, each runtime API call) beside the function's: when an
            # invocation fails, its output shows how far it got.
            "SAM_CLI_RIE_DEV": "1",
            # sam local hands these to the containers; moto takes any credentials.
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": "us-east-1",
            # sam build resolves the runtime's interpreter (python3.13) from PATH.
            "PATH": os.pathsep.join([str(Path(sys.base_prefix) / "bin"), os.environ.get("PATH", "")]),
        }
        for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            env.pop(name, None)
        return env

    def options(self) -> list[str]:
        """What every `sam local` command here gets: the built template, the functions' local resource
        names, the endpoint of moto, and our base image when the engine is ours."""
        return ["--template", str(self.template), *self.backend.sam_options, *self.engine.sam_image_options]


def sam_build(build_dir: Path, env: dict[str, str]) -> Path:
    result = subprocess.run(
        [SAM, "build", "--template", str(ROOT / "template.yaml"), "--build-dir", str(build_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"sam build failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    # What `make build` does after sam build: bytecode for every artifact (devstack.bytecode), so the tier
    # runs what is deployed. Without it every cold start compiles the layer (~1.5 s here) inside the
    # pixel's 3 s timeout, which sam local counts from the container's start.
    bytecode.compile_artifacts(build_dir, workers=2)
    return build_dir / "template.yaml"


@contextmanager
def function_environment(backend: Backend, logical_id: str) -> Iterator[None]:
    """This process, for a moment, configured as the function: to seed data the way the function stores it."""
    from opentracking.core import aws
    from opentracking.core.config import settings

    saved = dict(os.environ)
    os.environ.update(
        {
            **backend.stack.function_environment(logical_id),
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
        }
    )
    aws.reset_clients()
    settings.cache_clear()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        aws.reset_clients()
        settings.cache_clear()


def _interrupt_on_sigterm(signum: int, frame) -> None:
    # pytest tears fixtures down on KeyboardInterrupt, not on SIGTERM (which would end it on the spot)
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def sam_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SamLocal]:
    """The engine (started here unless one of ours already runs), moto and DNS on its bridge, and the built
    template. An engine started here is stopped on every way out: by the teardown below on success, failure,
    Ctrl-C or SIGTERM, and by its binding to this process (bound_to_caller) where even that cannot run
    (SIGKILL)."""
    was_running = engines.own_engine().answers()
    previous_sigterm = signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    try:
        engine = engines.ensure_engine(bound_to_caller=not was_running)
    except engines.EngineUnavailable as problem:
        signal.signal(signal.SIGTERM, previous_sigterm)
        pytest.fail(
            f"the sam local tier needs a Docker engine and could not get one: {problem}", pytrace=False
        )
    backend = None
    try:
        state = tmp_path_factory.mktemp("samlocal")
        backend = start_backend(engine.host_address, state)
        # example.com's tracking CNAME is published, as its owner would have done before verifying it.
        backend.dns.set_record(f"email.{DOMAIN}", "CNAME", "t.example")
        with function_environment(backend, "ApiFunction"):
            from opentracking.domains import registry

            registry.put(
                registry.Domain(
                    name=DOMAIN,
                    cname_target="t.example",
                    tracking_ready=True,
                    cname_valid="valid",
                    open_tracking=True,
                )
            )
        placeholder = SamLocal(engine=engine, backend=backend, template=Path())
        template = sam_build(state / "build", placeholder.environment())
        yield SamLocal(engine=engine, backend=backend, template=template)
    finally:
        if backend is not None:
            backend.stop()
        # The engine this session started goes with it, containers and all; one a developer started with
        # `make sam-local-engine` keeps running (its containers are sam local's, which removes them itself).
        if engine.own and not was_running:
            for line in engines.own_engine().stop():
                print(f"stopping the engine: {line}")
        signal.signal(signal.SIGTERM, previous_sigterm)


def stored_copies(backend: Backend, recipient: str) -> list[tuple[dict, bytes]]:
    """The copy records of one recipient with their stored message bytes, read straight from moto."""
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    ddb, s3 = backend.client("dynamodb"), backend.client("s3")
    found = []
    for page in ddb.get_paginator("scan").paginate(
        TableName=backend.resource("DataTable"),
        FilterExpression="sk = :copy AND recipient = :recipient",
        ExpressionAttributeValues={":copy": {"S": "COPY"}, ":recipient": {"S": recipient}},
    ):
        for item in page["Items"]:
            record = {name: deserializer.deserialize(value) for name, value in item.items()}
            key = record["s3_key"]
            found.append(
                (record, s3.get_object(Bucket=backend.resource("MessageBucket"), Key=key)["Body"].read())
            )
    return found


def parse_response(stdout: str) -> dict:
    """sam local invoke prints the function's response as the last line of its standard output."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines, "sam local invoke printed no response"
    return json.loads(lines[-1])


def metrics_logged(stderr: str) -> dict[str, float]:
    """The CloudWatch metrics (EMF lines) the function logged, by name: sam local passes the container's logs
    to its standard error."""
    found: dict[str, float] = {}
    decoder = json.JSONDecoder()
    for line in stderr.splitlines():
        start = line.find('{"_aws"')
        if start < 0:
            continue
        # The function and the emulator write to one stream unbuffered: under load a log line of the
        # emulator can land on the same line as an EMF document, before or after it. The document is read,
        # not the rest.
        document, _end = decoder.raw_decode(line, start)
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                values = document[metric["Name"]]
                found[metric["Name"]] = sum(values) if isinstance(values, list) else values
    return found
