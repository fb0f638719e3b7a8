"""Done-when of the DNS health issue, end to end: the local stack runs the checker on its schedule against
the DNS server named in OPENTRACKING_NAMESERVERS; the domains API shows the result; breaking the CNAME
stops injection at the next check and fixing it resumes injection."""

from __future__ import annotations

import time

import pytest

from devstack.dns_server import DnsServer
from devstack.process import start_stack

DOMAIN = "scheduled.example.com"


@pytest.fixture(scope="module")
def dns_server():
    with DnsServer() as server:
        yield server


@pytest.fixture(scope="module")
def stack(tmp_path_factory, dns_server):
    running = start_stack(
        tmp_path_factory.mktemp("scheduled"),
        extra_env={"OPENTRACKING_NAMESERVERS": dns_server.nameserver, "LOCAL_SCHEDULE_SECONDS": "1"},
    )
    yield running
    running.stop()


def eventually(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.25)
    return condition()


def record(stack) -> dict:
    return stack.call("GET", f"/v3/domains/{DOMAIN}").json()["sending_dns_records"][0]


def opens_tracked(stack) -> bool:
    sent = stack.call(
        "POST",
        f"/v3/{DOMAIN}/messages",
        data={"from": f"a@{DOMAIN}", "to": "r@example.net", "html": "<p>hi</p>"},
    )
    assert sent.status_code == 200, sent.text
    return sent.json()["tracking"]["opens"]


def test_schedule_breaks_and_restores_injection(stack, dns_server):
    # GIVEN a domain created with no CNAME: the scheduled checker finds it missing
    created = stack.call("POST", "/v3/domains", data={"name": DOMAIN}).json()["sending_dns_records"][0]
    assert stack.state["nameservers"] == dns_server.nameserver
    assert eventually(lambda: dns_server.query_count(created["name"]) >= 2)  # the schedule is running
    # WHEN the customer publishes it, the next run sees it without anyone calling verify
    dns_server.set_record(created["name"], "CNAME", created["value"])
    assert eventually(lambda: record(stack)["valid"] == "valid")
    assert stack.call("PUT", f"/v3/domains/{DOMAIN}/tracking/open", data={"active": "yes"}).status_code == 200
    assert opens_tracked(stack)
    # WHEN the CNAME is broken, the next run stops injection
    dns_server.set_record(created["name"], "CNAME", "elsewhere.example.net")
    assert eventually(lambda: record(stack)["valid"] == "invalid")
    assert record(stack)["status"] == "wrong_target"
    assert not opens_tracked(stack)
    # AND fixing it resumes injection
    dns_server.set_record(created["name"], "CNAME", created["value"])
    assert eventually(lambda: record(stack)["valid"] == "valid")
    assert opens_tracked(stack)
