"""The official Mailgun SDK's domain webhook calls, unchanged, against the local stack: create, list, get,
update and delete an `opened` webhook, and the errors Mailgun gives."""

from __future__ import annotations

import pytest
from mailgun.client import Client

DOMAIN = "sdk-webhooks.example.com"


@pytest.fixture(scope="module")
def client(local_stack):
    local_stack.create_tracked_domain(DOMAIN)
    with Client(auth=("api", local_stack.api_key), api_url=local_stack.api_url) as sdk:
        yield sdk


def test_opened_webhook_lifecycle_through_the_sdk(client):
    # GIVEN a domain without webhooks
    assert client.domains_webhooks.get(domain=DOMAIN).json() == {"webhooks": {}}
    # create: repeated `url` keys, as the SDK encodes a list
    urls = ["https://hooks.example.net/opened", "https://backup.example.net/opened"]
    created = client.domains_webhooks.create(domain=DOMAIN, data={"id": "opened", "url": urls})
    assert created.status_code == 200, created.text
    assert created.json() == {"message": "Webhook has been created", "webhook": {"urls": urls}}
    # list and get
    assert client.domains_webhooks.get(domain=DOMAIN).json() == {"webhooks": {"opened": {"urls": urls}}}
    fetched = client.domains_webhooks.get(domain=DOMAIN, webhook_name="opened")
    assert fetched.json() == {"webhook": {"urls": urls}}
    # update: the URLs are replaced
    new_urls = [("url", "https://hooks.example.net/v2"), ("url", "https://other.example.net/v2")]
    updated = client.domains_webhooks.put(domain=DOMAIN, webhook_name="opened", data=new_urls)
    assert updated.status_code == 200, updated.text
    assert updated.json()["message"] == "Webhook has been updated"
    assert client.domains_webhooks_opened.get(domain=DOMAIN).json() == {
        "webhook": {"urls": ["https://hooks.example.net/v2", "https://other.example.net/v2"]}
    }
    # delete
    deleted = client.domains_webhooks.delete(domain=DOMAIN, webhook_name="opened")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["message"] == "Webhook has been deleted"
    assert client.domains_webhooks.get(domain=DOMAIN, webhook_name="opened").status_code == 404
    assert client.domains_webhooks.get(domain=DOMAIN).json() == {"webhooks": {}}


def test_sdk_sees_mailgun_errors(client):
    duplicate = {"id": "opened", "url": "https://hooks.example.net/x"}
    assert client.domains_webhooks.create(domain=DOMAIN, data=duplicate).status_code == 200
    again = client.domains_webhooks.create(domain=DOMAIN, data=duplicate)
    assert (again.status_code, again.json()["message"]) == (400, "Webhook already exists")
    bad = client.domains_webhooks.create(domain=DOMAIN, data={"id": "bounced", "url": "https://x.example"})
    assert bad.status_code == 400
    assert client.domains_webhooks.get(domain="missing.example.com").status_code == 404
    client.domains_webhooks.delete(domain=DOMAIN, webhook_name="opened")
