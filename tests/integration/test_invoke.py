"""`make invoke` (devstack.invoke) runs every sample event through its function against the running
local stack, the way `sam local invoke -e events/<file>.json` would."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from devstack.invoke import function_for_event
from devstack.process import python_environment
from devstack.template import ROOT, Stack

EVENT_FILES = sorted((ROOT / "events").glob("*.json"))


def function_for(event: dict) -> str:
    return function_for_event(Stack(), event)


@pytest.mark.parametrize("event_file", EVENT_FILES, ids=lambda p: p.name)
def test_every_sample_event_runs_through_make_invoke(local_stack, event_file):
    local_stack.create_tracked_domain("example.com")
    event = json.loads(event_file.read_text())
    env = python_environment(OPENTRACKING_STATE_FILE=str(local_stack.state_file))
    result = subprocess.run(
        [sys.executable, "-m", "devstack.invoke", function_for(event), str(event_file.relative_to(ROOT))],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout[result.stdout.index("{\n") :])
    if event.get("Records", [{}])[0].get("eventSource") in ("aws:sqs", "aws:dynamodb"):
        assert response == {"batchItemFailures": []}  # every record handled, none failed
        return
    if "routeKey" not in event:  # the scheduled checker reports what it checked
        assert response["report"].startswith("health/")
        assert response["totals"]["checked"] >= 1
        return
    if event["routeKey"].startswith("GET /c/"):  # the sample token is not signed here: it leads nowhere
        assert response["statusCode"] == 404, response
        assert "This link is not valid" in response["body"]
        return
    assert response["statusCode"] == 200, response
    if event["routeKey"].startswith(("GET /o/", "HEAD /o/")):
        assert response["headers"]["Content-Type"] == "image/gif"
    elif event["routeKey"] == "GET /v4/domains":
        assert "example.com" in [item["name"] for item in json.loads(response["body"])["items"]]
    elif event["routeKey"] == "GET /v3/domains/{name}/webhooks":
        assert "webhooks" in json.loads(response["body"])
    else:
        assert json.loads(response["body"])["message"] == "Queued. Thank you."


def test_invoke_explains_a_missing_local_stack(tmp_path):
    env = python_environment(OPENTRACKING_STATE_FILE=str(tmp_path / "none.json"))
    result = subprocess.run(
        [sys.executable, "-m", "devstack.invoke", "PixelFunction", "events/pixel_get.json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "make run" in result.stderr
