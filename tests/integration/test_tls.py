"""TLS=1: the local stack serves HTTPS with a locally generated certificate, and stored copies carry
https pixel links, so HTTPS tracking can be tried end to end."""

from __future__ import annotations

import ssl

import pytest
import requests

from devstack.process import start_stack
from opentracking.tracking.pixel import GIF


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


@pytest.fixture(scope="module")
def custom_domains_stack(tmp_path_factory):
    """Per-domain certificates and custom domains on moto (ACM issues as soon as it is asked here)."""
    stack = start_stack(
        tmp_path_factory.mktemp("custom-domains-stack"),
        tls=True,
        extra_env={"TRACKING_HOSTS": "CustomDomains", "MOTO_ACM_VALIDATION_WAIT": "0"},
    )
    yield stack
    stack.stop()


def test_per_domain_certificate_and_custom_domain_through_the_local_stack(custom_domains_stack):
    stack = custom_domains_stack
    verified = stack.create_tracked_domain("hosts.example.com")
    tracking, validation = verified["sending_dns_records"]
    assert verified["tracking_host"]["state"] == "ready" and verified["domain"]["state"] == "active"
    assert validation["purpose"] == "certificate_validation" and validation["valid"] == "valid"
    assert tracking["value"].startswith("d-") and tracking["valid"] == "valid"
    # moto holds exactly what was provisioned: the certificate, the custom domain, the mapping to our API.
    (custom_domain,) = stack.client("apigatewayv2").get_domain_names()["Items"]
    (configuration,) = custom_domain["DomainNameConfigurations"]
    assert custom_domain["DomainName"] == "email.hosts.example.com"
    assert configuration["ApiGatewayDomainName"] == tracking["value"]
    (mapping,) = stack.client("apigatewayv2").get_api_mappings(DomainName="email.hosts.example.com")["Items"]
    (api,) = stack.client("apigatewayv2").get_apis()["Items"]
    assert mapping["ApiId"] == api["ApiId"]
    sent = requests.post(
        f"{stack.api_url}/v3/hosts.example.com/messages",
        auth=("api", stack.api_key),
        verify=stack.verify,
        data={"from": "a@hosts.example.com", "to": "hosts-reader@example.net", "html": "<p>x</p>"},
        timeout=30,
    )
    assert sent.status_code == 200, sent.text
    ((_record, copy),) = stack.copies_of("hosts-reader@example.net")
    assert b'src="https://email.hosts.example.com/o/' in copy
    deleted = stack.call("DELETE", "/v3/domains/hosts.example.com")
    assert deleted.status_code == 200
    assert stack.client("apigatewayv2").get_domain_names()["Items"] == []
    assert stack.client("acm").list_certificates()["CertificateSummaryList"] == []
