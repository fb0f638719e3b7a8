"""Delivery through Amazon SES on the local stack (issue 16): `make run` with DELIVERY_TRANSPORT=ses sends
each copy with SESv2 SendEmail to moto, whose SES (devstack.ses_simulator) reports on it as AWS does, through
EventBridge, the template's rule and the SES events queue to SesEventsFunction. The mailbox simulator's
addresses end as SES's do: delivered, bounced, complained, suppressed; the events API, the stats API and
the webhooks show them as Mailgun would."""

from __future__ import annotations

import pytest

from devstack.process import start_stack
from tests.helpers.polling import wait_for

DOMAIN = "ses.example.com"
SIMULATOR = "simulator.amazonses.com"


@pytest.fixture(scope="module")
def stack(hooks, tmp_path_factory):
    running = start_stack(
        tmp_path_factory.mktemp("ses-stack"),
        extra_env={"DELIVERY_TRANSPORT": "ses", "LOCAL_SES_REPORT_SECONDS": "0.2"},
    )
    running.create_tracked_domain(DOMAIN)
    for kind in ("delivered", "permanent_fail", "complained"):
        created = running.call("POST", f"/v3/domains/{DOMAIN}/webhooks", data={"id": kind, "url": hooks.url})
        assert created.status_code == 200, created.text
    yield running
    assert running.stop() == 0, "\n".join(running.output[-40:])


def test_the_mailbox_simulator_through_ses_events_to_mailgun_events(stack, hooks):
    names = ("success", "bounce", "complaint", "suppressionlist", "ooto")
    recipients = [f"{name}@{SIMULATOR}" for name in names]
    response = stack.call(
        "POST",
        f"/v3/{DOMAIN}/messages",
        data={
            "from": f"News <news@{DOMAIN}>",
            "to": ", ".join(recipients),
            "subject": "Through SES",
            "html": "<html><body><p>Hello</p></body></html>",
            "o:tag": "ses-test",
        },
    )
    assert response.status_code == 200, response.text
    message_id = response.json()["id"].strip("<>")

    def listed(event: str) -> list[dict]:
        found = stack.call("GET", f"/v3/{DOMAIN}/events", params={"message-id": message_id, "event": event})
        assert found.status_code == 200, found.text
        return found.json()["items"]

    def all_reported() -> bool:
        return len(listed("delivered")) == 3 and len(listed("failed")) == 2 and len(listed("complained")) == 1

    assert wait_for(all_reported), (listed("delivered"), listed("failed"), listed("complained"))
    delivered = {e["recipient"]: e for e in listed("delivered")}
    assert set(delivered) == {f"success@{SIMULATOR}", f"complaint@{SIMULATOR}", f"ooto@{SIMULATOR}"}
    status = delivered[f"success@{SIMULATOR}"]["delivery-status"]
    assert (status["code"], status["attempt-no"]) == (250, 1)
    assert delivered[f"success@{SIMULATOR}"]["message"]["headers"]["subject"] == "Through SES"
    failed = {e["recipient"]: (e["severity"], e["reason"]) for e in listed("failed")}
    assert failed == {
        f"bounce@{SIMULATOR}": ("permanent", "bounce"),
        f"suppressionlist@{SIMULATOR}": ("permanent", "suppress-bounce"),
    }
    (complaint,) = listed("complained")
    assert complaint["recipient"] == f"complaint@{SIMULATOR}" and complaint["tags"] == ["ses-test"]

    # the tag's stats count them as Mailgun's do, once each
    def stats() -> dict:
        found = stack.call(
            "GET",
            f"/v3/{DOMAIN}/tags/ses-test/stats",
            params=[("event", "delivered"), ("event", "failed"), ("event", "complained"), ("duration", "1d")],
        )
        assert found.status_code == 200, found.text
        totals: dict = {"delivered": 0, "bounce": 0, "suppress-bounce": 0, "complained": 0}
        for row in found.json()["stats"]:
            totals["delivered"] += row["delivered"]["total"]
            totals["bounce"] += row["failed"]["permanent"]["bounce"]
            totals["suppress-bounce"] += row["failed"]["permanent"]["suppress-bounce"]
            totals["complained"] += row["complained"]["total"]
        return totals

    expected = {"delivered": 3, "bounce": 1, "suppress-bounce": 1, "complained": 1}
    assert wait_for(lambda: stats() == expected), stats()

    # and the webhooks fire: delivered, permanent_fail (Mailgun posts the failed event) and complained
    def posted() -> list[tuple[str, str]]:
        return sorted(
            (p["event-data"]["event"], p["event-data"]["recipient"].split("@")[0])
            for p in hooks.payloads()
            if p["event-data"]["message"]["headers"]["message-id"] == message_id
        )

    assert wait_for(lambda: len(posted()) >= 6 and posted()) == [
        ("complained", "complaint"),
        ("delivered", "complaint"),
        ("delivered", "ooto"),
        ("delivered", "success"),
        ("failed", "bounce"),
        ("failed", "suppressionlist"),
    ]
