"""TLS=1: the local stack serves HTTPS with a locally generated certificate, and stored copies carry
https pixel links, so HTTPS tracking can be tried end to end."""

from __future__ import annotations

import ssl

import pytest
import requests

from devstack.process import start_stack
from opentracking.pixel import GIF


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory):
    stack = start_stack(tmp_path_factory.mktemp("tls-stack"), tls=True)
    yield stack
    stack.stop()


def test_https_pixel_and_https_links(tls_stack):
    certificate = tls_stack.verify  # the local CA
    # the certificate is valid for 127.0.0.1: verification against it succeeds
    response = requests.get(f"{tls_stack.api_url}/o/anything", verify=certificate, timeout=10)
    assert (response.status_code, response.content) == (200, GIF)
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{tls_stack.api_url}/o/anything", timeout=10)  # not trusted by default, as expected
    tls_stack.create_tracked_domain("tls.example.com")
    sent = requests.post(
        f"{tls_stack.api_url}/v3/tls.example.com/messages",
        auth=("api", tls_stack.api_key),
        verify=certificate,
        data={"from": "a@tls.example.com", "to": "tls-reader@example.net", "html": "<p>x</p>"},
        timeout=30,
    )
    assert sent.status_code == 200, sent.text
    ((_record, copy),) = tls_stack.copies_of("tls-reader@example.net")
    assert b'src="https://email.tls.example.com/o/' in copy
    assert ssl.get_server_certificate(("127.0.0.1", tls_stack.port)).startswith("-----BEGIN CERTIFICATE-----")
