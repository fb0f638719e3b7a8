"""Starting the local stack as a separate process on free ports: what the integration and end-to-end
tests (and anyone scripting against `make run`) use. Bounded waits, clean shutdown."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import requests
from boto3.dynamodb.types import TypeDeserializer

from devstack.server import DEFAULT_API_KEY
from devstack.template import ROOT

_deserializer = TypeDeserializer()


def python_environment(**extra: str) -> dict[str, str]:
    """This process's environment, with the library and devstack importable (for `python -m devstack.*`)."""
    path = os.pathsep.join([str(ROOT / "layers" / "opentracking"), str(ROOT / "local")])
    return {**os.environ, "PYTHONPATH": path, **extra}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def zone_value(record: dict) -> str:
    """A record of `sending_dns_records` as a zone file writes it (TXT quoted, MX with its priority)."""
    if record["record_type"] == "TXT":
        return '"' + record["value"].replace('"', '\\"') + '"'
    if record["record_type"] == "MX":
        return f"{record.get('priority') or 10} {record['value'].rstrip('.')}."
    return record["value"]


@dataclass
class StackClient:
    """A client of a running local stack, found through the state file it writes."""

    state_file: Path
    api_key: str

    @classmethod
    def from_state_file(cls, state_file: Path, api_key: str) -> StackClient:
        if not state_file.exists():
            raise SystemExit(f"no local stack state at {state_file}: start one with `make run` first")
        return cls(state_file=state_file, api_key=api_key)

    @property
    def api_url(self) -> str:
        return self.state["api_url"]

    @property
    def aws_endpoint(self) -> str:
        return self.state["aws_endpoint"]

    @property
    def scheme(self) -> str:
        return self.api_url.split(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.api_url.rsplit(":", 1)[1])

    @property
    def state(self) -> dict:
        return json.loads(self.state_file.read_text())

    def resource(self, logical_id: str) -> str:
        return self.state["resources"][logical_id]

    def client(self, service: str):
        return boto3.session.Session(
            aws_access_key_id="local",
            aws_secret_access_key="local",  # noqa: S106 - moto accepts any credentials
            region_name="us-east-1",
        ).client(service, endpoint_url=self.aws_endpoint)

    @property
    def verify(self) -> str | bool:
        """What requests should trust: the stack's own certificate under TLS=1."""
        return str(self.state_file.parent / "tls" / "ca.crt") if self.scheme == "https" else True

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        """One authenticated API request (the account key)."""
        return requests.request(
            method, self.api_url + path, auth=("api", self.api_key), timeout=30, verify=self.verify, **kwargs
        )

    def publish_dns(self, name: str, rdtype: str, value: str) -> None:
        """Publish a record in the stack's local DNS: what a customer does at their DNS provider."""
        response = requests.put(
            f"{self.api_url}/_local/dns/{name}",
            json={"type": rdtype, "value": value},
            timeout=10,
            verify=self.verify,
        )
        response.raise_for_status()

    def create_tracked_domain(self, domain: str, *, top: bool = False) -> dict:
        """The path a new user takes: create the domain, publish its records (the tracking CNAME, and the
        sending identity's SPF, DKIM and MAIL FROM where it has them), verify, switch open tracking on.
        Returns the verified domain as the API shows it."""
        created = self.call("POST", "/v3/domains", data={"name": domain})
        if created.status_code == 400 and "already exists" in created.text:
            return self.call("GET", f"/v3/domains/{domain}").json()
        created.raise_for_status()
        records = created.json()["sending_dns_records"]
        # With per-domain custom domains (TRACKING_HOSTS=CustomDomains) the tracking CNAME's value is known
        # only once the certificate is issued and the host mapped: publish what is known, verify, repeat.
        for _round in range(3):
            for record in records:
                if record["value"]:
                    self.publish_dns(record["name"], record["record_type"], zone_value(record))
            verified = self.call("PUT", f"/v3/domains/{domain}/verify")
            verified.raise_for_status()
            records = verified.json()["sending_dns_records"]
            if all(record["valid"] == "valid" for record in records):
                break
        tracking = self.call(
            "PUT",
            f"/v3/domains/{domain}/tracking/open",
            data={"active": "yes", "place_at_the_top": "yes" if top else "no"},
        )
        tracking.raise_for_status()
        return verified.json()

    def copy_items(self, copy_id: str, prefix: str) -> list[dict]:
        """Items of one message copy whose sort key starts with `prefix` (COPY, EVENT#, OPEN#)."""
        response = self.client("dynamodb").query(
            TableName=self.resource("DataTable"),
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues={":pk": {"S": f"COPY#{copy_id}"}, ":prefix": {"S": prefix}},
        )
        return response["Items"]

    def copies_of(self, recipient: str | None = None) -> list[tuple[dict, bytes]]:
        """The copy records of one recipient (every copy with None), as plain values, each with its message
        as sent: its own stored object, or rendered from its message's template (messages.copies)."""
        # The layer's own reader, imported here: importing it loads Powertools, which a tool must not do
        # before its environment is set.
        from opentracking.messages import copies

        ddb, s3 = self.client("dynamodb"), self.client("s3")
        condition, values = "sk = :copy", {":copy": {"S": "COPY"}}
        if recipient is not None:
            condition += " AND recipient = :recipient"
            values[":recipient"] = {"S": recipient}
        pages = ddb.get_paginator("scan").paginate(
            TableName=self.resource("DataTable"), FilterExpression=condition, ExpressionAttributeValues=values
        )
        keyring = self.keyring()
        stored: dict[str, bytes] = {}
        found = []
        for page in pages:
            for item in page["Items"]:
                record = {name: _deserializer.deserialize(value) for name, value in item.items()}
                key = record["s3_key"]
                if key not in stored:
                    stored[key] = s3.get_object(Bucket=self.resource("MessageBucket"), Key=key)["Body"].read()
                found.append((record, copies.render(stored[key], record["pk"], keyring)))
        return found

    def keyring(self) -> Any:
        """The stack's token keys (from its Secrets Manager), to render copies stored as templates."""
        from opentracking.tracking import tokens

        secret = self.client("secretsmanager").get_secret_value(SecretId=self.resource("TokenKeysSecret"))
        return tokens.KeyRing.from_secret(json.loads(secret["SecretString"]))

    def issued_tokens(self) -> set[str]:
        """Every pixel and click token in the copies this stack stored (to search its log for them)."""
        found: set[str] = set()
        for _, body in self.copies_of():
            found.update(match.decode() for match in _TOKEN_IN_LINK.findall(body))
        return found


# A tracked link's token, as copies carry it (/o/<token> for the pixel, /c/<token> for a click).
_TOKEN_IN_LINK = re.compile(rb"/[oc]/([A-Za-z0-9_-]{16,})")
# Anything in a log line that could be a token.
_TOKEN_SHAPED = re.compile(r"[A-Za-z0-9_-]{16,}")


def leaked_tokens(lines: list[str], tokens: set[str]) -> list[str]:
    """The lines that carry one of `tokens`."""
    return [line for line in lines if tokens.intersection(_TOKEN_SHAPED.findall(line))]


@dataclass
class RunningStack(StackClient):
    """A local stack this process started (tests): a client that can also stop it."""

    process: subprocess.Popen | None = None
    output: list[str] = field(default_factory=list)

    def stop(self, timeout: float = 15.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        return self.process.returncode


def start_stack(
    state_dir: Path,
    *,
    api_key: str = DEFAULT_API_KEY,
    tls: bool = False,
    extra_env: dict[str, str] | None = None,
    timeout: float = 90.0,
) -> RunningStack:
    port, aws_port = free_port(), free_port()
    state_file = state_dir / "stack.json"
    env = {
        **python_environment(),
        "PORT": str(port),
        "AWS_PORT": str(aws_port),
        "API_KEY": api_key,
        "TLS": "1" if tls else "0",
        "OPENTRACKING_STATE_FILE": str(state_file),
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        env.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack.server"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    stack = RunningStack(state_file=state_file, api_key=api_key, process=process)
    ready = threading.Event()  # set once the server printed "ready" (the state file exists from then on)

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            stack.output.append(line.rstrip())
            if "ready" in line:
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.1):
        if process.poll() is not None or time.monotonic() > deadline:
            stack.stop()
            raise RuntimeError("local stack did not start:\n" + "\n".join(stack.output[-40:]))
    return stack
