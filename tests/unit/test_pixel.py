"""The pixel: always the GIF, one write and no read per genuine open, nothing for a forged token."""

from __future__ import annotations

import base64
import random
import time

import boto3
import botocore.client
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from devstack.handlers import load_event, load_handler
from opentracking.core.config import settings
from opentracking.storage import store
from opentracking.tracking import pixel, tokens
from tests.helpers.invoke import pixel_event
from tests.helpers.spill import redrive, spilled

EXPECTED_HEADERS = {
    "Content-Type": "image/gif",
    "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
}


@pytest.fixture
def handler(aws):
    return load_handler("functions/pixel")


@pytest.fixture
def token(aws):
    keyring = tokens.load_keyring(settings().token_secret_name)
    return tokens.issue_token(keyring, bytes.fromhex("00112233445566778899aabbccddeeff"), "example.com")


def urlsafe_bytes(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def opens(stack) -> list[dict]:
    table = boto3.resource("dynamodb").Table(stack.ref("DataTable"))
    return [i for i in table.scan()["Items"] if i["sk"].startswith("OPEN#")]


def assert_gif(response: dict) -> None:
    assert response["statusCode"] == 200
    assert response["isBase64Encoded"] is True
    assert base64.b64decode(response["body"]) == pixel.GIF
    assert len(pixel.GIF) == 43 and pixel.GIF.startswith(b"GIF89a")
    for name, value in EXPECTED_HEADERS.items():
        assert response["headers"][name] == value


def test_genuine_open_writes_one_raw_open(aws, handler, token, lambda_context):
    # WHEN the pixel is loaded from a reader at a known address
    response = handler.lambda_handler(pixel_event(token, source_ip="198.51.100.7"), lambda_context)
    # THEN the GIF, and exactly one raw open naming the copy, with address, agent, method and expiry
    assert_gif(response)
    (item,) = opens(aws)
    assert item["pk"] == "COPY#00112233445566778899aabbccddeeff"
    assert item["ip"] == "198.51.100.7" and item["user_agent"] == "Mozilla/5.0 (X11) Test"
    assert item["method"] == "GET" and item["domain"] == "example.com" and item["key_id"] == 1
    assert abs(float(item["ts"]) - time.time()) < 60
    assert int(item["expires_at"]) > time.time() + 29 * 86400


def test_head_is_recorded_as_head(aws, handler, token, lambda_context):
    assert_gif(handler.lambda_handler(pixel_event(token, "HEAD"), lambda_context))
    assert [i["method"] for i in opens(aws)] == ["HEAD"]


def test_two_loads_are_two_opens(aws, handler, token, lambda_context):
    handler.lambda_handler(pixel_event(token), lambda_context)
    handler.lambda_handler(pixel_event(token), lambda_context)
    assert len(opens(aws)) == 2


@pytest.mark.parametrize("bad", ["", "x", "AAAA", "%2e%2e%2f", "A" * 5000, "\u00e9\u00e9", None])
def test_bad_tokens_get_the_gif_and_record_nothing(aws, handler, lambda_context, bad):
    assert_gif(handler.lambda_handler(pixel_event(bad), lambda_context))
    assert opens(aws) == []


def test_edited_token_records_nothing(aws, handler, token, lambda_context):
    edited = token[:10] + ("B" if token[10] != "B" else "C") + token[11:]
    assert_gif(handler.lambda_handler(pixel_event(edited), lambda_context))
    assert opens(aws) == []


@pytest.mark.parametrize(
    "spelling",
    [
        lambda t: t[:5] + "." + t[5:],  # the decoder drops characters outside the alphabet
        lambda t: t[:5] + "!" + t[5:],
        lambda t: t + "*",
        lambda t: t + "==",  # padding the canonical form leaves off
    ],
    ids=["dot", "bang", "star", "padding"],
)
def test_only_the_canonical_spelling_of_a_token_counts(aws, handler, token, lambda_context, spelling):
    # GIVEN another spelling of a genuine token that decodes to the same bytes (issue 15 row 10)
    other = spelling(token)
    assert other != token and urlsafe_bytes(other) == urlsafe_bytes(token)
    # THEN the reader still gets the GIF, and no open is recorded
    assert_gif(handler.lambda_handler(pixel_event(other), lambda_context))
    assert opens(aws) == []
    # while the genuine spelling is recorded
    handler.lambda_handler(pixel_event(token), lambda_context)
    assert len(opens(aws)) == 1


def test_sample_events_get_the_gif(aws, handler, lambda_context):
    for name in ("pixel_get.json", "pixel_head.json"):
        assert_gif(handler.lambda_handler(load_event(name), lambda_context))
    assert opens(aws) == []  # the sample token is not signed with this deployment's key


def test_a_warm_open_costs_one_write_and_no_read(aws, handler, token, lambda_context, monkeypatch):
    # GIVEN a warm function (the key ring is cached after the first open)
    handler.lambda_handler(pixel_event(token), lambda_context)
    calls: list[str] = []
    original = botocore.client.BaseClient._make_api_call

    def counting(self, operation_name, api_params):
        calls.append(f"{self.meta.service_model.service_name}.{operation_name}")
        return original(self, operation_name, api_params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", counting)
    # WHEN another open arrives
    handler.lambda_handler(pixel_event(token), lambda_context)
    # THEN exactly one AWS request was made: the write
    assert calls == ["dynamodb.PutItem"]


@pytest.mark.parametrize(
    "failure",
    [
        ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "x"}}, "PutItem"),
        EndpointConnectionError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com"),
    ],
)
def test_dynamodb_down_still_serves_the_gif(aws, handler, token, lambda_context, failure):
    from opentracking.core.aws import client

    def fail(**_kwargs):
        raise failure

    client("dynamodb", "pixel").meta.events.register("before-call.dynamodb.PutItem", fail)
    started = time.perf_counter()
    response = handler.lambda_handler(pixel_event(token), lambda_context)
    assert_gif(response)
    assert time.perf_counter() - started < 5  # bounded: no unbounded retry loop
    assert opens(aws) == []
    assert len(spilled(aws)) == 1  # kept for the redrive function


@pytest.mark.parametrize("fault", ["server error", "throttled", "read timeout"])
def test_the_pixel_makes_one_attempt_then_spills(aws, handler, token, lambda_context, monkeypatch, fault):
    # The fault is injected under botocore's retry handling (in DynamoDB itself, or in the HTTP exchange),
    # so the attempts counted are the ones botocore's own retry configuration makes: the spill is the retry.
    from botocore.exceptions import ReadTimeoutError
    from moto.core.exceptions import JsonRESTError
    from moto.dynamodb.models import DynamoDBBackend

    from opentracking.core.aws import client

    attempts = []

    def dynamodb_fails(*_args, **_kwargs):
        attempts.append(fault)
        status, code = (
            (500, "InternalServerError") if fault == "server error" else (400, "ThrottlingException")
        )
        error = JsonRESTError(code, "injected")
        error.code = status
        raise error

    def no_answer(request, **_kwargs):
        attempts.append(fault)
        raise ReadTimeoutError(endpoint_url=request.url)

    pixel_client = client("dynamodb", "pixel")
    if fault == "read timeout":
        pixel_client.meta.events.register_first("before-send.dynamodb.PutItem", no_answer)
    else:
        monkeypatch.setattr(DynamoDBBackend, "put_item", dynamodb_fails)
    assert_gif(handler.lambda_handler(pixel_event(token), lambda_context))
    assert len(attempts) == 1
    assert pixel_client.meta.config.retries == {"total_max_attempts": 1, "mode": "standard"}
    assert opens(aws) == [] and len(spilled(aws)) == 1  # not lost: the redrive writes it


def test_secret_unavailable_still_serves_the_gif_and_keeps_the_open(
    aws, handler, token, lambda_context, monkeypatch
):
    # GIVEN the pixel cannot read its keys
    monkeypatch.setenv("TOKEN_SECRET_NAME", "no-such-secret")
    settings.cache_clear()
    tokens.reset_cache()
    # WHEN a genuine and a forged token arrive
    forged = "AQ" + "A" * 60
    assert_gif(handler.lambda_handler(pixel_event(token), lambda_context))
    assert_gif(handler.lambda_handler(pixel_event(forged), lambda_context))
    # THEN nothing is written yet: both wait on the spill queue
    assert opens(aws) == []
    waiting = spilled(aws)
    assert len(waiting) == 2
    # AND once the keys are back, the redrive writes the genuine one and drops the forgery
    monkeypatch.setenv("TOKEN_SECRET_NAME", aws.ref("TokenKeysSecret"))
    settings.cache_clear()
    tokens.reset_cache()
    assert redrive(aws, lambda_context, waiting) == {"batchItemFailures": []}
    assert len(opens(aws)) == 1


def test_count_in_equals_count_out_under_injected_write_faults(aws, handler, token, lambda_context):
    # GIVEN DynamoDB failing 30% of the pixel's writes (a fixed seed: the same faults every run)
    from opentracking.core.aws import client

    faults = random.Random(2026)

    def flaky(**_kwargs):
        if faults.random() < 0.3:
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "injected"}}, "PutItem")

    client("dynamodb", "pixel").meta.events.register("before-call.dynamodb.PutItem", flaky)
    # WHEN 2,000 opens arrive (the pixel's client retries once, so some faults are absorbed there)
    opens_sent = 2000
    for _ in range(opens_sent):
        assert_gif(handler.lambda_handler(pixel_event(token), lambda_context))
    client("dynamodb", "pixel").meta.events.unregister("before-call.dynamodb.PutItem", flaky)
    waiting = spilled(aws)
    assert 0 < len(waiting) < opens_sent
    # THEN after the redrive every one of them is recorded, once
    for start in range(0, len(waiting), 10):  # in SQS-sized batches, as the trigger delivers them
        assert redrive(aws, lambda_context, waiting[start : start + 10]) == {"batchItemFailures": []}
    assert len(opens(aws)) == opens_sent
    assert spilled(aws) == []


def test_redrive_retries_while_dynamodb_is_still_down(aws, handler, token, lambda_context):
    from opentracking.core.aws import client

    def fail(**_kwargs):
        raise ClientError({"Error": {"Code": "InternalServerError", "Message": "x"}}, "PutItem")

    for profile in ("pixel", "default"):
        client("dynamodb", profile).meta.events.register("before-call.dynamodb.PutItem", fail)
    handler.lambda_handler(pixel_event(token), lambda_context)
    messages = spilled(aws)
    response = redrive(aws, lambda_context, messages)
    assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == [messages[0]["MessageId"]]
    for profile in ("pixel", "default"):
        client("dynamodb", profile).meta.events.unregister("before-call.dynamodb.PutItem", fail)
    redrive(aws, lambda_context, messages)
    assert len(opens(aws)) == 1


def test_even_with_the_spill_queue_down_the_reader_gets_the_gif(aws, handler, token, lambda_context, capsys):
    from opentracking.core.aws import client

    def fail(**_kwargs):
        raise EndpointConnectionError(endpoint_url="https://unreachable")

    client("dynamodb", "pixel").meta.events.register("before-call.dynamodb.PutItem", fail)
    client("sqs", "pixel").meta.events.register("before-call.sqs.SendMessage", fail)
    assert_gif(handler.lambda_handler(pixel_event(token), lambda_context))
    assert '"OpenLost"' in capsys.readouterr().out  # counted, so the alarm can see it


def test_open_item_matches_the_documented_key_layout(aws):
    claims = tokens.OpenClaims(copy_id="ab" * 16, domain="example.com", key_id=1)
    item = pixel.open_item(
        claims,
        request_id="req1",
        source_ip="192.0.2.1",
        user_agent="UA",
        method="GET",
        expires_at=1,
        now=1700000000.5,
    )
    assert item["pk"] == {"S": "COPY#" + "ab" * 16}
    assert item["sk"] == {"S": "OPEN#1700000000500#req1"}
    store.serialize({"x": 1})  # the store's serializer is not needed on the hot path, but must agree
