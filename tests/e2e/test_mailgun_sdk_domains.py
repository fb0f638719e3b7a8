"""The official Mailgun SDK's domain calls, unchanged, against the local stack: create, list, get,
verify, tracking settings, delete."""

from __future__ import annotations

import pytest
from mailgun.client import Client

DOMAIN = "sdk-domains.example.com"


@pytest.fixture(scope="module")
def client(local_stack):
    with Client(auth=("api", local_stack.api_key), api_url=local_stack.api_url) as sdk:
        yield sdk


def test_domain_lifecycle_through_the_sdk(local_stack, client):
    # create: the tracking CNAME is listed, not yet valid
    created = client.domains.create(data={"name": DOMAIN, "web_prefix": "email"})
    assert created.status_code == 200, created.text
    (record,) = created.json()["sending_dns_records"]
    assert (record["record_type"], record["name"], record["valid"]) == ("CNAME", f"email.{DOMAIN}", "invalid")
    # tracking cannot be enabled yet
    refused = client.domains_tracking_open.put(domain=DOMAIN, data={"active": "yes"})
    assert refused.status_code == 400
    # publish the record at the (local) DNS provider, then verify through the SDK
    local_stack.publish_dns(record["name"], "CNAME", record["value"])
    verified = client.domains.put(domain=DOMAIN, verify=True)
    assert verified.status_code == 200, verified.text
    assert verified.json()["sending_dns_records"][0]["valid"] == "valid"
    assert client.domains_tracking_open.put(domain=DOMAIN, data={"active": "yes"}).status_code == 200
    tracking = client.domains_tracking.get(domain=DOMAIN).json()["tracking"]
    assert tracking["open"] == {"active": True, "place_at_the_top": False}
    # list and get
    listed = client.domainlist.get().json()
    assert DOMAIN in [item["name"] for item in listed["items"]]
    assert client.domains.get(domain=DOMAIN).json()["domain"]["state"] == "active"
    # delete
    assert client.domains.delete(domain=DOMAIN).json() == {"message": "Domain has been deleted"}
    assert client.domains.get(domain=DOMAIN).status_code == 404
