"""`make invoke FUNCTION=<logical id> EVENT=events/<file>.json`: one handler, one event, against the
running local stack: the stand-in for `sam local invoke` where there is no container runtime.

    python -m devstack.invoke PixelFunction events/pixel_get.json
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from devstack.routes import http_routes
from devstack.runtime import functions
from devstack.server import STATE_FILE
from devstack.template import ROOT, Stack


def function_for_event(stack: Stack, event: dict) -> str:
    """The function whose trigger produced this sample event: its HttpApi route, the SQS queue it polls, the
    DynamoDB stream it reads, or its schedule rule."""
    if "routeKey" in event:
        (function,) = [r.function for r in http_routes(stack) if r.route_key == event["routeKey"]]
        return function
    if event.get("Records", [{}])[0].get("eventSource") == "aws:sqs":
        queue = event["Records"][0]["eventSourceARN"].rsplit(":", 1)[1].removeprefix(f"{stack.name}-")
        (function,) = [
            name
            for name, resource in stack.functions().items()
            for trigger in resource["Properties"].get("Events", {}).values()
            if trigger["Type"] == "SQS" and trigger["Properties"]["Queue"] == {"Fn::GetAtt": [queue, "Arn"]}
        ]
        return function
    if event.get("Records", [{}])[0].get("eventSource") == "aws:dynamodb":
        table = event["Records"][0]["eventSourceARN"].split("/")[1].removeprefix(f"{stack.name}-")
        (function,) = [
            name
            for name, resource in stack.functions().items()
            for trigger in resource["Properties"].get("Events", {}).values()
            if trigger["Type"] == "DynamoDB"
            and trigger["Properties"]["Stream"] == {"Fn::GetAtt": [table, "StreamArn"]}
        ]
        return function
    (function,) = [name for name in stack.functions() if name in event["resources"][0]]
    return function


def load_state(state_file: Path = STATE_FILE) -> dict:
    if not state_file.exists():
        raise SystemExit(f"no local stack state at {state_file}: start one with `make run` first")
    state = json.loads(state_file.read_text())
    try:
        urllib.request.urlopen(state["aws_endpoint"] + "/moto-api/", timeout=2).close()  # noqa: S310 - loopback
    except (urllib.error.URLError, OSError):
        raise SystemExit(
            f"the local stack at {state['aws_endpoint']} is not answering: is `make run` running?"
        ) from None
    return state


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[0] or not argv[1]:
        print("usage: make invoke FUNCTION=<logical id> EVENT=events/<file>.json", file=sys.stderr)
        return 2
    logical_id, event_path = argv
    stack = Stack()
    available = functions(stack)
    if logical_id not in available:
        print(
            f"unknown function {logical_id!r}; the template has: {', '.join(sorted(available))}",
            file=sys.stderr,
        )
        return 2
    path = Path(event_path)
    path = path if path.is_absolute() else ROOT / path
    event = json.loads(path.read_text())
    state = load_state(Path(os.environ.get("OPENTRACKING_STATE_FILE", str(STATE_FILE))))
    os.environ.update(state["environment"])
    result = available[logical_id].invoke(event)
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
