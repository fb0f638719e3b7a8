"""`sam local start-api` serves the template's HTTP API from containers: the submission route stores a tracked
copy, and the pixel route answers the exact 43-byte GIF, binary and intact, and records the open."""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from devstack.server import DEFAULT_API_KEY
from devstack.template import ROOT
from opentracking.tracking.pixel import GIF

from .conftest import DOMAIN, SAM, SamLocal, stored_copies

START_TIMEOUT = 300.0
REQUEST_TIMEOUT = 120.0
CACHE_CONTROL = "no-store, no-cache, must-revalidate, max-age=0"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def api(sam_local: SamLocal) -> Iterator[str]:
    """`sam local start-api` on a free loopback port; stopped (and its containers removed) afterwards."""
    port = free_port()
    process = subprocess.Popen(
        [
            *(SAM, "local", "start-api", "--host", "127.0.0.1", "--port", str(port)),
            # Every function's container starts before the API serves: a request never races its container's
            # start (see ATTEMPTS in test_sam_local_invoke.py), and later requests reuse it.
            *("--warm-containers", "EAGER"),
            *sam_local.options(),
        ],
        cwd=ROOT,
        env=sam_local.environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    threading.Thread(target=lambda: output.extend(process.stdout), daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("sam local start-api did not start:\n" + "".join(output[-60:]), pytrace=False)
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()  # SIGTERM: sam stops and removes its warm containers
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_pixel_route_serves_the_exact_gif_for_any_token(api):
    response = requests.get(f"{api}/o/not-a-real-token", timeout=REQUEST_TIMEOUT)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/gif"
    assert response.headers["Cache-Control"] == CACHE_CONTROL
    assert response.content == GIF
    assert len(response.content) == 43
    assert response.content.startswith(b"GIF89a")


def test_submission_route_queues_and_its_pixel_records_the_open(sam_local, api):
    recipient = "dora@example.net"
    response = requests.post(
        f"{api}/v3/{DOMAIN}/messages",
        auth=("api", DEFAULT_API_KEY),
        data={
            "from": "Sender <sender@example.com>",
            "to": recipient,
            "subject": "Through sam local start-api",
            "html": "<html><body><p>Hello</p></body></html>",
            "o:tracking-opens": "yes",
        },
        timeout=REQUEST_TIMEOUT,
    )
    assert response.status_code == 200, response.text
    assert response.json()["message"] == "Queued. Thank you."

    ((record, message),) = stored_copies(sam_local.backend, recipient)
    assert record["tracked"] is True
    (pixel_path,) = re.findall(rb"https://email\.example\.com(/o/[A-Za-z0-9_\-]+)", message)

    opened = requests.get(
        api + pixel_path.decode(),
        headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"},
        timeout=REQUEST_TIMEOUT,
    )
    assert opened.status_code == 200
    assert opened.content == GIF

    # the open: one item under the copy, written by the pixel function in its container
    ddb = sam_local.backend.client("dynamodb")
    opens = ddb.query(
        TableName=sam_local.backend.resource("DataTable"),
        KeyConditionExpression="pk = :pk AND begins_with(sk, :open)",
        ExpressionAttributeValues={":pk": {"S": record["pk"]}, ":open": {"S": "OPEN#"}},
    )["Items"]
    assert len(opens) == 1, opens


def test_unauthenticated_submission_is_refused(api):
    response = requests.post(
        f"{api}/v3/{DOMAIN}/messages",
        auth=("api", "wrong-key"),
        data={"to": "x@example.net"},
        timeout=REQUEST_TIMEOUT,
    )
    assert response.status_code == 401
    assert "message" in response.json()
