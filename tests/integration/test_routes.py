"""Every route of the template through the running local stack, with plain HTTP requests: status codes,
content types and binary bodies as API Gateway would return them."""

from __future__ import annotations

import base64
import time

import pytest
import requests

from opentracking.tracking.pixel import GIF

NO_CACHE = "no-store, no-cache, must-revalidate, max-age=0"


@pytest.fixture(scope="module")
def domain(local_stack):
    local_stack.create_tracked_domain("routes.example.com")
    return "routes.example.com"


def auth(stack) -> tuple[str, str]:
    return ("api", stack.api_key)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize(
    "token", ["garbage", "AQEAAAAAAAAAAAAAAAAAAAAAZXhhbXBsZS5jb20AAAAAAAAAAAAAAAAAAAAA", "%2e%2e"]
)
def test_pixel_answers_the_gif_for_any_token(local_stack, method, token):
    response = requests.request(method, f"{local_stack.api_url}/o/{token}", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/gif"
    assert response.headers["Cache-Control"] == NO_CACHE
    assert response.headers["Content-Length"] == "43"
    assert response.content == (GIF if method == "GET" else b"")


def test_pixel_answers_whatever_host_is_named(local_stack):
    response = requests.get(
        f"{local_stack.api_url}/o/x", headers={"Host": "email.customer.example"}, timeout=10
    )
    assert response.status_code == 200
    assert response.content == GIF


def test_submission_needs_the_api_key(local_stack, domain):
    response = requests.post(
        f"{local_stack.api_url}/v3/{domain}/messages", data={"to": "a@example.net"}, timeout=10
    )
    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert response.json()["message"].startswith("Forbidden")


def test_form_submission_is_queued_with_a_tracked_copy(local_stack, domain):
    response = requests.post(
        f"{local_stack.api_url}/v3/{domain}/messages",
        auth=auth(local_stack),
        data=[
            ("from", "s@routes.example.com"),
            ("to", "reader@example.net"),
            ("subject", "hi"),
            ("html", "<html><body>hi</body></html>"),
            ("o:tag", "routes"),
        ],
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["message"] == "Queued. Thank you."
    assert body["tracking"]["opens"] is True


def test_binary_attachment_round_trips_through_the_emulated_gateway(local_stack, domain):
    blob = bytes(range(256)) * 64
    response = requests.post(
        f"{local_stack.api_url}/v3/{domain}/messages",
        auth=auth(local_stack),
        data={
            "from": "s@routes.example.com",
            "to": "bin@example.net",
            "subject": "bin",
            "text": "see attached",
        },
        files=[("attachment", ("blob.bin", blob, "application/octet-stream"))],
        timeout=30,
    )
    assert response.status_code == 200, response.text
    ((_record, copy),) = local_stack.copies_of("bin@example.net")
    encoded = base64.b64encode(blob)
    assert encoded[:76] in copy  # base64 lines of the attachment, byte-exact from the form upload


def test_mime_submission(local_stack, domain):
    mime = (
        b"From: s@routes.example.com\r\nTo: m@example.net\r\nSubject: raw\r\n"
        b"Content-Type: text/html\r\n\r\n<p>raw</p>\r\n"
    )
    response = requests.post(
        f"{local_stack.api_url}/v3/{domain}/messages.mime",
        auth=auth(local_stack),
        data={"to": "m@example.net"},
        files={"message": ("message.mime", mime, "message/rfc822")},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json()["tracking"]["opens"] is True


def test_bad_input_is_a_400_in_mailguns_shape(local_stack, domain):
    response = requests.post(
        f"{local_stack.api_url}/v3/{domain}/messages",
        auth=auth(local_stack),
        data={"to": "a@example.net"},
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json() == {"message": "'from' parameter is missing"}


def test_unknown_domain_is_a_404(local_stack):
    response = requests.post(
        f"{local_stack.api_url}/v3/nowhere.example/messages",
        auth=auth(local_stack),
        data={"from": "a@nowhere.example", "to": "b@example.net", "text": "x"},
        timeout=10,
    )
    assert response.status_code == 404
    assert response.json() == {"message": "Domain not found: nowhere.example"}


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/"), ("GET", "/v3/x/y/z/unknown"), ("DELETE", "/o/x"), ("PATCH", "/v3/example.com/messages")],
)
def test_unrouted_requests_are_404_json(local_stack, method, path):
    response = requests.request(method, local_stack.api_url + path, timeout=10)
    assert response.status_code == 404
    assert response.json() == {"message": "Not Found"}


@pytest.mark.parametrize("path", ["/v3/x/unknown", "/v3/example.com/messages", "/v3/example.com/bouncez/a"])
def test_paths_shaped_like_a_suppression_list_need_a_key_and_are_404_when_no_list(local_stack, path):
    # /v3/{domain}/{kind} is the suppression lists' route (bounces, complaints, unsubscribes, whitelists):
    # as on API Gateway, any other GET of that shape reaches it, which asks for a key, then says 404.
    assert requests.get(local_stack.api_url + path, timeout=10).status_code == 401
    response = requests.get(local_stack.api_url + path, auth=auth(local_stack), timeout=10)
    assert response.status_code == 404 and response.json()["message"]


def test_the_request_log_names_no_token(local_stack, domain):
    # GIVEN a tracked copy with a pixel and a tracked link
    recipient = "log.reader@example.net"
    response = requests.post(
        f"{local_stack.api_url}/v3/{domain}/messages",
        auth=auth(local_stack),
        data={
            "from": f"s@{domain}",
            "to": recipient,
            "html": '<html><body><a href="https://shop.example/">shop</a></body></html>',
            "o:tracking": "yes",
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text
    ((_, message),) = local_stack.copies_of(recipient)
    pixel = message.decode().split("/o/", 1)[1].split('"', 1)[0]
    click = message.decode().split("/c/", 1)[1].split('"', 1)[0]
    logged_before = len(local_stack.output)

    # WHEN a mail client loads them, also by HEAD, OPTIONS and mangled forms of the links
    for method, path in [
        ("GET", f"/o/{pixel}"),
        ("HEAD", f"/o/{pixel}"),
        ("OPTIONS", f"/o/{pixel}"),
        ("GET", f"/o/{pixel}/extra"),
        ("GET", f"/o/{pixel}?x=1"),
        ("GET", f"/c/{click}"),
    ]:
        requests.request(method, local_stack.api_url + path, allow_redirects=False, timeout=10)

    # THEN each request is logged, and no line names either token
    def request_lines() -> list[str]:
        return [line for line in local_stack.output[logged_before:] if " /o/" in line or " /c/" in line]

    deadline = time.monotonic() + 10
    while len(request_lines()) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    logged = request_lines()
    assert len(logged) == 6, logged
    assert sum("GET /o/{token} -> 200" in line for line in logged) == 2, logged
    assert any("GET /c/{token} -> " in line for line in logged), logged
    assert any("GET /o/... -> " in line for line in logged), logged
    assert not [line for line in logged if pixel in line or click in line]
