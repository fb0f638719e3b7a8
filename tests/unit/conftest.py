"""Unit tests run in-process under moto and must not reach any network."""

import json

import boto3
import pytest
from pytest_socket import disable_socket, enable_socket

from devstack.events import make_http_event, pixel_path
from devstack.handlers import load_handler
from devstack.streams import read_all
from opentracking.core import (
    tracing,  # noqa: F401 - X-Ray's emitter opens a UDP socket when the tracer is built
)
from opentracking.messages import copies
from opentracking.reporting.consumer import ALL_TAGS
from tests.helpers.invoke import send_message


@pytest.fixture(autouse=True)
def _no_network():
    disable_socket(allow_unix_socket=True)
    yield
    enable_socket()


OUTLOOK = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)"


@pytest.fixture
def world(aws, tracked_domain, lambda_context, basic_auth):
    submit, pixel = load_handler("functions/submit"), load_handler("functions/pixel")
    consumer = load_handler("functions/events")
    table = boto3.resource("dynamodb").Table(aws.ref("DataTable"))

    class World:
        def send(self, recipients="a@example.net, b@example.net", tags=("Launch",), extra=()) -> str:
            fields = [
                ("from", "s@example.com"),
                ("to", recipients),
                ("html", "<html><body>hi</body></html>"),
                ("v:plan", "pro"),
                *[("o:tag", t) for t in tags],
                *extra,
            ]
            self.last_response = send_message(submit, lambda_context, fields, auth=basic_auth)
            return self.last_response["id"].strip("<>")

        def copy(self, recipient: str) -> dict:
            return next(i for i in table.scan()["Items"] if i["sk"] == "COPY" and i["recipient"] == recipient)

        def backdate(self, recipient: str, seconds: float = 3600) -> None:
            """Accepted an hour ago, so an open now is not 'seconds after acceptance'."""
            copy = self.copy(recipient)
            table.update_item(
                Key={"pk": copy["pk"], "sk": "COPY"},
                UpdateExpression="SET created_at = :t",
                ExpressionAttributeValues={":t": str(float(copy["created_at"]) - seconds)},
            )

        def open(self, recipient: str, *, user_agent=OUTLOOK, method="GET", ip="198.51.100.9") -> None:
            copy = self.copy(recipient)
            token = copies.read(copy).decode().split("/o/", 1)[1].split('"', 1)[0]
            event = make_http_event(
                method,
                pixel_path(token),
                route_key=f"{method} /o/{{token}}",
                path_parameters={"token": token},
                headers={"user-agent": user_agent},
                source_ip=ip,
            )
            pixel.lambda_handler(event, lambda_context)

        def consume(self) -> dict:
            return consumer.lambda_handler(read_all(aws.get_att("DataTable", "StreamArn")), lambda_context)

        def opened(self) -> list[dict]:
            items = [i for i in table.scan()["Items"] if i.get("event") == "opened"]
            return [json.loads(i["payload"]) for i in items]

        def counters(self, tag: str = ALL_TAGS) -> dict[str, int]:
            totals: dict[str, int] = {}
            for item in table.scan()["Items"]:
                if item["pk"].startswith(f"STATS#example.com#{tag}#"):
                    for field in ("accepted_total", "opened_total", "opened_unique", "opened_machine_total"):
                        totals[field] = totals.get(field, 0) + int(item.get(field, 0))
            return totals

    return World()


@pytest.fixture
def delays(aws) -> list[int]:
    """The DelaySeconds the sender asks SQS for, recorded; the message is then sent without it, so a test
    (which moves its own clock) can receive it at once."""
    from opentracking.core.aws import client

    asked: list[int] = []

    def record(params, **_):
        asked.append(params.get("DelaySeconds", 0))
        params["DelaySeconds"] = 0

    client("sqs").meta.events.register("provide-client-params.sqs.SendMessage", record)
    return asked
