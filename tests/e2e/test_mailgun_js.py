"""Mailgun's official Node.js SDK (mailgun.js, pinned in tests/e2e/node), unchanged, against the local stack:
a client we did not write, reading what a newsletter app reads back (events with Mailgun's filter
expressions, stats, the Metrics API, tags, webhooks) and what an app that manages its account calls (the
Logs API, account tags, domain settings, the tracking certificate)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.polling import wait_for

DOMAIN = "js.example.com"
READER, OTHER = "js-reader@example.net", "js-other@example.net"
CLIENT = Path(__file__).parent / "node"


def drive(local_stack, phase: str) -> dict:
    node = shutil.which("node")
    assert node, "Node.js 20 runs mailgun.js here (these machines have it: /usr/bin/node)"
    assert (CLIENT / "node_modules" / "mailgun.js").is_dir(), (
        "run `make test` (it installs mailgun.js with npm ci)"
    )
    env = {
        **os.environ,
        "API_URL": local_stack.api_url,
        "API_KEY": local_stack.api_key,
        "DOMAIN": DOMAIN,
        "READER": READER,
        "OTHER": OTHER,
    }
    done = subprocess.run(
        [node, str(CLIENT / "drive.mjs"), phase],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert "error" not in answer, answer["error"]
    return answer


@pytest.fixture(scope="module")
def read_back(local_stack):
    local_stack.create_tracked_domain(DOMAIN)
    sent = drive(local_stack, "send")["sent"]

    # the stream consumer counts the accepted events (and records the tag) in the background
    def counted():
        return local_stack.call("GET", f"/v3/{DOMAIN}/tags/js-launch").status_code == 200

    assert wait_for(counted)
    return sent, drive(local_stack, "read")


def test_mailgun_js_sends_a_batch_with_recipient_variables(read_back):
    sent, _ = read_back
    assert sent["status"] == 200 and sent["message"] == "Queued. Thank you."
    assert sent["id"].startswith("<") and sent["id"].endswith(f"@{DOMAIN}>")


def test_mailgun_js_reads_events_with_a_filter_expression(read_back):
    _, read = read_back
    events = {item["recipient"]: item for item in read["events"]["items"]}
    assert set(events) == {READER, OTHER}
    # a key with ":" in recipient-variables reached each copy's user variables
    assert events[READER]["user-variables"] == {"cust": "c-1"}
    assert events[OTHER]["user-variables"] == {"cust": "c-2"}
    assert events[READER]["message"]["headers"]["from"] == f"Newsletter <news@{DOMAIN}>"
    assert events[READER]["storage"]["url"].endswith(f"/messages/{events[READER]['storage']['key']}")
    assert read["permanent"]["items"] == []  # severity=permanent: nothing failed, so nothing, not everything
    assert read["events"]["pages"]["next"]["url"]  # mailgun.js parsed our paging


def test_mailgun_js_reads_the_domain_webhooks_and_tags(read_back):
    _, read = read_back
    assert read["domain"]["name"] == DOMAIN and read["domain"]["id"] != DOMAIN  # an opaque id
    assert read["webhook"]["id"] == "accepted" and read["webhook"]["urls"] == [
        "https://hooks.example.net/accepted"
    ]
    assert read["webhooks"]["accepted"]["urls"] == ["https://hooks.example.net/accepted"]
    assert [tag["tag"] for tag in read["tags"]["items"]] == ["js-launch"]
    assert read["tag"]["tag"] == "js-launch"
    # mailgun.js turns first-seen into a Date: it is one (RFC 3339 in, ISO 8601 out)
    assert read["tag"]["first-seen"].endswith("Z")


def test_mailgun_js_reads_stats_and_the_metrics_api(read_back):
    _, read = read_back
    stats = read["stats"]["stats"]
    assert sum(row["accepted"]["total"] for row in stats) == 2
    assert all({"accepted", "delivered", "failed", "opened"} <= set(row) for row in stats)
    metrics = read["metrics"]
    assert metrics["status"] == 200 and metrics["aggregates"]["metrics"]["accepted_count"] >= 2
    assert metrics["start"] and metrics["end"]  # mailgun.js parsed them as dates


@pytest.fixture(scope="module")
def managed(read_back, local_stack):
    return drive(local_stack, "manage")


def test_mailgun_js_reads_the_logs_api_page_by_page(managed):
    first, second = managed["logs"], managed["nextPage"]
    assert first["status"] == 200 and first["pagination"]["total"] == 2 and first["aggregates"]["all"] == 2
    assert [item["event"] for item in first["items"] + second["items"]] == ["accepted", "accepted"]
    recipients = {item["recipient"] for item in first["items"] + second["items"]}
    assert recipients == {READER, OTHER}
    assert first["items"][0]["domain"] == {"name": DOMAIN}
    assert first["items"][0]["@timestamp"].endswith("Z")  # mailgun.js parsed it into a Date
    assert "next" not in second["pagination"] or second["pagination"]["next"] != first["pagination"]["next"]


def test_mailgun_js_manages_account_tags(managed):
    (tag,) = managed["accountTags"]["items"]
    assert tag["tag"] == "js-launch" and tag["first_seen"].endswith("Z")
    assert managed["accountTags"]["pagination"]["total"] == 1
    assert managed["described"] == {"message": "Tag updated"}
    assert managed["describedTag"]["description"] == "Launch mail, sent with mailgun.js"
    limits = managed["tagLimits"]
    assert limits["count"] >= 1 and limits["limit"] >= 20000 and limits["limit_reached"] is False
    assert managed["deleted"] == {"message": "Tag deleted"}
    assert managed["deletedTag"]["error"]["status"] == 404


def test_mailgun_js_updates_the_domain_and_reads_its_certificate(managed):
    assert managed["updated"]["name"] == DOMAIN and managed["updated"]["require_tls"] is True
    refused = managed["refused"]["error"]
    assert refused["status"] == 400 and "wildcard" in refused["details"]
    # the local stack serves every tracking host with one certificate (TrackingHosts=SharedTarget)
    assert managed["certificate"]["responseStatusCode"] == 200
    assert managed["certificate"]["status"] in ("processing", "active", "error")
    generate = managed["generate"]
    assert generate["status"] == 202 and "SharedTarget" in generate["message"]
    assert generate["location"] == f"/v2/x509/email.{DOMAIN}/status"
