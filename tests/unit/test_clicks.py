"""The click redirect: 302 to exactly the sealed URL, one write per click, nothing for a tampered token,
and the reader still redirected when DynamoDB is down (the click waits on the spill queue)."""

from __future__ import annotations

import base64
import string
from urllib.parse import quote

import boto3
import botocore.client
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.events import make_http_event
from devstack.handlers import load_event, load_handler
from opentracking.core.config import settings as config
from opentracking.tracking import clicks, tokens
from opentracking.tracking.tokens import (
    MAX_CLICK_URL_BYTES,
    InvalidToken,
    KeyRing,
    issue_click_token,
    issue_token,
    verify_click_token,
    verify_token,
)
from tests.helpers.spill import redrive, spilled

COPY = bytes.fromhex("00112233445566778899aabbccddeeff")
TARGET = "https://shop.example.org/offer?id=7&who=alice@example.net"
RING = KeyRing.from_secret({"active": "1", "1": "k" * 48})


@pytest.fixture
def handler(aws):
    return load_handler("functions/click")


@pytest.fixture
def keyring(aws):
    return tokens.load_keyring(config().token_secret_name)


@pytest.fixture
def token(keyring):
    return issue_click_token(keyring, COPY, "example.com", TARGET)


def click_event(token: str | None, method: str = "GET", **extra) -> dict:
    path = "/c/" + quote(token, safe="") if token else "/c/"
    return make_http_event(
        method,
        path,
        route_key=f"{method} /c/{{token}}",
        path_parameters={"token": token} if token is not None else None,
        headers={"host": "email.example.com", "user-agent": "Mozilla/5.0 (X11) Test"},
        **extra,
    )


def raw_clicks(stack) -> list[dict]:
    table = boto3.resource("dynamodb").Table(stack.ref("DataTable"))
    return [i for i in table.scan()["Items"] if i["sk"].startswith("CLICK#")]


def assert_not_redirected(response: dict) -> None:
    assert response["statusCode"] == 404
    assert "Location" not in response["headers"]
    assert response["headers"]["Content-Type"] == "text/html; charset=utf-8"
    assert "This link is not valid" in response["body"]


# --- the token --------------------------------------------------------------------------------------


def test_click_token_round_trip_names_copy_domain_and_url():
    token = issue_click_token(RING, COPY, "Example.COM", TARGET)
    claims = verify_click_token(RING, token)
    assert (claims.copy_id, claims.domain, claims.key_id, claims.url) == (
        COPY.hex(),
        "example.com",
        1,
        TARGET,
    )
    # the same copy and URL give the same token (a link repeated in a message is one token)
    assert issue_click_token(RING, COPY, "example.com", TARGET) == token


def test_click_token_seals_the_url_so_it_reveals_no_address():
    # GIVEN a URL that carries the recipient's address (batch sending substitutes such things)
    token = issue_click_token(RING, COPY, "example.com", TARGET)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    # THEN neither the address nor the URL can be read from the token
    assert b"alice" not in raw and b"@" not in raw and b"shop.example" not in raw
    assert set(token) <= set(string.ascii_letters + string.digits + "-_")


def test_every_bit_flip_of_a_click_token_is_rejected():
    token = issue_click_token(RING, COPY, "example.com", "https://a.example/x")
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    for index in range(len(raw)):
        for bit in range(8):
            edited = bytearray(raw)
            edited[index] ^= 1 << bit
            with pytest.raises(InvalidToken):
                verify_click_token(RING, base64.urlsafe_b64encode(bytes(edited)).rstrip(b"=").decode())


def test_truncated_and_extended_click_tokens_are_rejected():
    token = issue_click_token(RING, COPY, "example.com", "https://a.example/x")
    for edited in [token[:n] for n in range(len(token))] + [token + "A", token + "AAAA"]:
        with pytest.raises(InvalidToken):
            verify_click_token(RING, edited)


def test_every_character_edit_of_a_click_token_is_rejected_even_in_the_padding_bits():
    token = issue_click_token(RING, COPY, "example.com", "https://a.example/x")
    for index, char in enumerate(token):
        for replacement in set(string.ascii_letters + string.digits + "-_") - {char}:
            with pytest.raises(InvalidToken):
                verify_click_token(RING, token[:index] + replacement + token[index + 1 :])
    with pytest.raises(InvalidToken):
        verify_click_token(RING, token + "==")


def test_a_click_token_carries_the_domain_privacy_instructions_signed():
    token = issue_click_token(RING, COPY, "example.com", TARGET, anonymize_ip=True, retention_days=7)
    claims = verify_click_token(RING, token)
    assert (claims.anonymize_ip, claims.retention_days, claims.url) == (True, 7, TARGET)
    assert claims.open_claims() == tokens.OpenClaims(COPY.hex(), "example.com", 1, True, 7)
    plain = verify_click_token(RING, issue_click_token(RING, COPY, "example.com", TARGET))
    assert (plain.anonymize_ip, plain.retention_days) == (False, None)
    # switching anonymisation off means forging the token: the SIV covers the flags
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[2] = 0
    with pytest.raises(InvalidToken):
        verify_click_token(RING, base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode())


def test_pixel_and_click_tokens_are_not_interchangeable():
    for pixel_token in (
        issue_token(RING, COPY, "example.com"),
        issue_token(RING, COPY, "example.com", anonymize_ip=True, retention_days=7),
    ):
        with pytest.raises(InvalidToken):
            verify_click_token(RING, pixel_token)
    with pytest.raises(InvalidToken):
        verify_token(RING, issue_click_token(RING, COPY, "example.com", TARGET))


def test_a_click_token_signed_by_another_deployment_is_rejected():
    other = KeyRing.from_secret({"active": "1", "1": "z" * 48})
    with pytest.raises(InvalidToken):
        verify_click_token(RING, issue_click_token(other, COPY, "example.com", TARGET))


def test_urls_too_long_to_seal_are_refused_at_issue():
    assert verify_click_token(
        RING, issue_click_token(RING, COPY, "example.com", "https://a.example/" + "x" * 2000)
    )
    with pytest.raises(ValueError, match="too long"):
        issue_click_token(RING, COPY, "example.com", "https://a.example/" + "x" * MAX_CLICK_URL_BYTES)


# --- the redirect -------------------------------------------------------------------------------------


def test_a_click_redirects_to_the_sealed_url_and_records_it_once(aws, handler, token, lambda_context):
    # WHEN a reader follows the link
    response = handler.lambda_handler(click_event(token, source_ip="198.51.100.7"), lambda_context)
    # THEN a 302 to exactly the original URL, never cached, no referrer leaking the token
    assert response["statusCode"] == 302
    assert response["headers"]["Location"] == TARGET
    assert response["headers"]["Cache-Control"].startswith("no-store")
    assert response["headers"]["Referrer-Policy"] == "no-referrer"
    # AND one raw click naming the copy and the URL
    (item,) = raw_clicks(aws)
    assert item["pk"] == f"COPY#{COPY.hex()}" and item["type"] == "click"
    assert (item["url"], item["ip"], item["method"]) == (TARGET, "198.51.100.7", "GET")


def test_head_redirects_too_and_is_recorded_as_head(aws, handler, token, lambda_context):
    response = handler.lambda_handler(click_event(token, "HEAD"), lambda_context)
    assert (response["statusCode"], response["headers"]["Location"]) == (302, TARGET)
    assert [i["method"] for i in raw_clicks(aws)] == ["HEAD"]


def test_query_and_headers_cannot_change_where_a_click_goes(aws, handler, token, lambda_context):
    event = click_event(token, query="url=https://evil.example/&next=//evil.example")
    event["headers"]["referer"] = "https://evil.example/"
    assert handler.lambda_handler(event, lambda_context)["headers"]["Location"] == TARGET


def test_a_warm_click_costs_one_write_and_no_read(aws, handler, token, lambda_context, monkeypatch):
    handler.lambda_handler(click_event(token), lambda_context)
    calls: list[str] = []
    original = botocore.client.BaseClient._make_api_call

    def counting(self, operation_name, api_params):
        calls.append(f"{self.meta.service_model.service_name}.{operation_name}")
        return original(self, operation_name, api_params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", counting)
    assert handler.lambda_handler(click_event(token), lambda_context)["statusCode"] == 302
    assert calls == ["dynamodb.PutItem"]


def test_a_tampered_token_never_redirects_and_records_nothing(aws, handler, token, lambda_context):
    edited = token[:30] + ("B" if token[30] != "B" else "C") + token[31:]
    assert_not_redirected(handler.lambda_handler(click_event(edited), lambda_context))
    assert raw_clicks(aws) == [] and spilled(aws) == []


@pytest.mark.parametrize("bad", ["", "x", "AgAA", "%2e%2e%2f", "A" * 5000, "\u00e9\u00e9", None])
def test_malformed_tokens_get_the_not_valid_page(aws, handler, lambda_context, bad):
    assert_not_redirected(handler.lambda_handler(click_event(bad), lambda_context))
    assert raw_clicks(aws) == []


def test_a_pixel_token_on_the_click_route_does_not_redirect(aws, handler, keyring, lambda_context):
    pixel_token = issue_token(keyring, COPY, "example.com")
    assert_not_redirected(handler.lambda_handler(click_event(pixel_token), lambda_context))


def test_the_sample_event_is_not_signed_here(aws, handler, lambda_context):
    assert_not_redirected(handler.lambda_handler(load_event("click_get.json"), lambda_context))


@pytest.mark.parametrize(
    ("url", "location"),
    [
        ("https://example.org/caf\u00e9 menu?q=\u00fc", "https://example.org/caf%C3%A9%20menu?q=%C3%BC"),
        ("https://example.org/a%20b?x=1&y=%2F#top", "https://example.org/a%20b?x=1&y=%2F#top"),
        ('https://example.org/"quoted"<x>', "https://example.org/%22quoted%22%3Cx%3E"),
    ],
)
def test_location_is_ascii_and_keeps_existing_escapes(url, location):
    assert clicks.location_for(url) == location


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "https://a.example/\r\nSet-Cookie: x=1", "data:text/html,x", "https:///x"]
)
def test_location_refuses_anything_a_browser_should_not_be_sent_to(url):
    assert clicks.location_for(url) is None


@pytest.mark.parametrize(
    "failure",
    [
        ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "x"}}, "PutItem"),
        EndpointConnectionError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com"),
    ],
)
def test_dynamodb_down_still_redirects_and_the_click_is_redriven(
    aws, handler, token, lambda_context, failure
):
    from opentracking.core.aws import client

    def fail(**_kwargs):
        raise failure

    client("dynamodb", "pixel").meta.events.register("before-call.dynamodb.PutItem", fail)
    # WHEN the table cannot be written
    response = handler.lambda_handler(click_event(token), lambda_context)
    # THEN the reader still lands on the target
    assert (response["statusCode"], response["headers"]["Location"]) == (302, TARGET)
    assert raw_clicks(aws) == []
    # AND the click waits on the spill queue, and the redrive records it (the same item a live write makes)
    waiting = spilled(aws)
    assert len(waiting) == 1
    assert redrive(aws, lambda_context, waiting) == {"batchItemFailures": []}
    (item,) = raw_clicks(aws)
    assert item["url"] == TARGET and item["type"] == "click"


def test_keys_unavailable_asks_for_a_retry_and_keeps_the_click(
    aws, handler, token, lambda_context, monkeypatch
):
    # GIVEN the function cannot read its keys
    monkeypatch.setenv("TOKEN_SECRET_NAME", "no-such-secret")
    config.cache_clear()
    tokens.reset_cache()
    # WHEN a genuine and a forged click arrive
    for candidate in (token, "Ag" + "A" * 80):
        response = handler.lambda_handler(click_event(candidate), lambda_context)
        # THEN neither is redirected anywhere (the URL cannot be read): a 503 page to retry
        assert response["statusCode"] == 503 and "Location" not in response["headers"]
    # AND once the keys are back the redrive writes the genuine click and drops the forgery
    waiting = spilled(aws)
    assert len(waiting) == 2
    monkeypatch.setenv("TOKEN_SECRET_NAME", aws.ref("TokenKeysSecret"))
    config.cache_clear()
    tokens.reset_cache()
    assert redrive(aws, lambda_context, waiting) == {"batchItemFailures": []}
    assert [i["url"] for i in raw_clicks(aws)] == [TARGET]


# --- hostile input (Hypothesis, fixed seed) ----------------------------------------------------------

HOSTILE = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


@given(data=st.data())
@HOSTILE
def test_no_edit_of_a_genuine_token_redirects_anywhere(aws, handler, token, lambda_context, data):
    # GIVEN a genuine token edited by an attacker: characters replaced, inserted, removed, or the
    # token cut and spliced with another genuine token sealing the attacker's URL
    evil = issue_click_token(
        tokens.load_keyring(config().token_secret_name), COPY, "example.com", "https://evil.example/"
    )
    alphabet = string.ascii_letters + string.digits + "-_=%./"
    position = data.draw(st.integers(0, len(token) - 1))
    edit = data.draw(st.sampled_from(["replace", "insert", "delete", "splice"]))
    if edit == "replace":
        char = data.draw(st.sampled_from(alphabet).filter(lambda c: c != token[position]))
        forged = token[:position] + char + token[position + 1 :]
    elif edit == "insert":
        forged = token[:position] + data.draw(st.text(alphabet, min_size=1, max_size=8)) + token[position:]
    elif edit == "delete":
        forged = token[:position] + token[position + data.draw(st.integers(1, 8)) :]
    else:
        forged = token[:position] + evil[position:]
    if forged in (token, evil):
        return
    # WHEN it is followed
    response = handler.lambda_handler(click_event(forged), lambda_context)
    # THEN it goes nowhere, and nothing is recorded
    assert_not_redirected(response)
    assert raw_clicks(aws) == []


@given(
    garbage=st.one_of(
        st.text(max_size=300), st.binary(max_size=300).map(lambda b: base64.urlsafe_b64encode(b).decode())
    )
)
@HOSTILE
def test_random_tokens_never_redirect_and_never_fail_the_server(aws, handler, lambda_context, garbage):
    response = handler.lambda_handler(click_event(garbage or None), lambda_context)
    assert_not_redirected(response)
    assert raw_clicks(aws) == []
