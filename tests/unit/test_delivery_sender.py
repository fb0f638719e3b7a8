"""The sender under moto (opentracking.delivery.sender): submission queues one job per recipient, and each
job's copy goes through the transport once, with its outcome recorded as Mailgun's delivered or failed
event. The transport is the network's stand-in here (a scripted relay's answers); the SMTP conversation
itself is tested against real servers in tests/integration/test_smtp_transport.py."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from email.utils import format_datetime

import boto3
import pytest

from opentracking.delivery import sender, smtp
from opentracking.delivery.jobs import SendJob
from opentracking.privacy import erasure

NOW = 1_900_000_000.0


def reply(outcome: smtp.Outcome, code: int, text: str = "") -> smtp.Reply:
    return smtp.Reply(outcome, code, text, tls=True, mx_host="relay.example.test", session_seconds=0.1)


OK = reply(smtp.Outcome.DELIVERED, 250, "2.0.0 Ok: queued")
BOUNCE = reply(smtp.Outcome.PERMANENT, 550, "5.1.1 No such user")
BUSY = reply(smtp.Outcome.TEMPORARY, 451, "4.3.0 Busy")


class Relay:
    """What the transport was asked to send, and the answers it gives, in order."""

    def __init__(self, *answers: smtp.Reply):
        self.answers = list(answers)
        self.sent: list[tuple[str, str, bytes]] = []

    def __call__(self, sender_address: str, recipient: str, message: bytes) -> smtp.Reply:
        self.sent.append((sender_address, recipient, message))
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@pytest.fixture
def delivering(world, monkeypatch):
    monkeypatch.setenv("DELIVERY_TRANSPORT", "smtp")
    monkeypatch.setenv("SMTP_RELAY", "relay.example.test:587")
    monkeypatch.setenv("DELIVERY_RETRY_SCHEDULE", "60,600")
    sender.reset_cache()
    return world


def queued(aws) -> list[str]:
    sqs = boto3.client("sqs")
    bodies: list[str] = []
    for _ in range(100):
        batch = sqs.receive_message(QueueUrl=aws.ref("SendQueue"), MaxNumberOfMessages=10).get("Messages", [])
        if not batch:
            return bodies
        for message in batch:
            bodies.append(message["Body"])
            sqs.delete_message(QueueUrl=aws.ref("SendQueue"), ReceiptHandle=message["ReceiptHandle"])
    return bodies


def stored_events(aws, name: str) -> list[dict]:
    table = boto3.resource("dynamodb").Table(aws.ref("DataTable"))
    return [json.loads(i["payload"]) for i in table.scan()["Items"] if i.get("event") == name]


def test_one_job_per_recipient_and_each_copy_sent_as_stored(delivering, aws):
    delivering.send("a@example.net, b@example.net, c@example.net")
    bodies = queued(aws)
    assert len(bodies) == 3
    relay = Relay(OK)
    assert [sender.process(body, now=lambda: NOW, transport=relay) for body in bodies] == ["delivered"] * 3
    s3 = boto3.client("s3")
    for sender_address, recipient, message in relay.sent:
        copy = delivering.copy(recipient)
        assert sender_address == "s@example.com"
        assert message == s3.get_object(Bucket=aws.ref("MessageBucket"), Key=copy["s3_key"])["Body"].read()
    delivered = stored_events(aws, "delivered")
    assert sorted(e["recipient"] for e in delivered) == ["a@example.net", "b@example.net", "c@example.net"]
    event = delivered[0]
    assert event["delivery-status"] == {
        "code": 250,
        "message": "2.0.0 Ok: queued",
        "description": "",
        "attempt-no": 1,
        "tls": True,
        "certificate-verified": False,
        "mx-host": "relay.example.test",
        "session-seconds": 0.1,
        "utf8": True,
    }
    assert event["tags"] == ["launch"] and event["user-variables"] == {"plan": "pro"}
    assert event["timestamp"] == NOW and event["log-level"] == "info"


def test_a_redelivered_job_sends_nothing_again(delivering, aws):
    delivering.send("a@example.net")
    (body,) = queued(aws)
    relay = Relay(OK)
    assert sender.process(body, now=lambda: NOW, transport=relay) == "delivered"
    assert sender.process(body, now=lambda: NOW + 5, transport=relay) == "already_done"
    assert len(relay.sent) == 1 and len(stored_events(aws, "delivered")) == 1


def test_a_copy_being_sent_by_another_worker_is_left_to_it_until_its_lease_expires(delivering, aws):
    delivering.send("a@example.net")
    (body,) = queued(aws)
    job = SendJob.from_body(body)
    assert sender._claim(aws.ref("DataTable"), job.tried(NOW), NOW)  # another worker took it and died
    relay = Relay(OK)
    assert sender.process(body, now=lambda: NOW + 10, transport=relay) == "busy"
    assert relay.sent == []
    assert sender.process(body, now=lambda: NOW + sender.LEASE_SECONDS + 1, transport=relay) == "delivered"


def test_a_bounce_is_a_permanent_failure_and_is_not_retried(delivering, aws):
    delivering.send("a@example.net")
    (body,) = queued(aws)
    assert sender.process(body, now=lambda: NOW, transport=Relay(BOUNCE)) == "failed"
    assert queued(aws) == []
    (event,) = stored_events(aws, "failed")
    assert (event["severity"], event["reason"], event["log-level"]) == ("permanent", "bounce", "error")
    assert event["delivery-status"]["code"] == 550 and event["delivery-status"]["bounce-type"] == "hard"


def test_temporary_failures_follow_the_schedule_then_fail_permanently(delivering, aws, delays):
    delivering.send("a@example.net")
    (body,) = queued(aws)
    relay = Relay(BUSY)
    assert sender.process(body, now=lambda: NOW, transport=relay) == "retry_scheduled"
    (retry,) = queued(aws)
    assert json.loads(retry)["attempt"] == 1 and json.loads(retry)["next_at"] == NOW + 60
    # delivered early (as a chained delay would be): put back for the rest of its wait, nothing sent
    assert sender.process(retry, now=lambda: NOW + 30, transport=relay) == "waiting"
    assert len(relay.sent) == 1 and queued(aws) == [retry]
    assert delays == [60, 30]
    assert sender.process(retry, now=lambda: NOW + 60, transport=relay) == "retry_scheduled"
    (last,) = queued(aws)
    assert json.loads(last)["next_at"] == NOW + 60 + 600 and delays[-1] == 600
    assert sender.process(last, now=lambda: NOW + 700, transport=relay) == "failed"
    failures = sorted(stored_events(aws, "failed"), key=lambda e: e["delivery-status"]["attempt-no"])
    assert [(e["severity"], e["delivery-status"]["attempt-no"]) for e in failures] == [
        ("temporary", 1),
        ("temporary", 2),
        ("permanent", 3),
    ]
    assert failures[-1]["reason"] == "old" and "Too old" in failures[-1]["delivery-status"]["description"]
    assert [e["delivery-status"].get("retry-seconds") for e in failures] == [60, 600, None]


def test_a_duplicated_retry_job_makes_its_attempt_once(delivering, aws, delays):
    """SQS may deliver a message twice: the second copy of a retry job is refused by the claim (the
    attempt it names was made), so a failing copy is never tried twice per attempt, nor its retries
    doubled."""
    delivering.send("a@example.net")
    (body,) = queued(aws)
    relay = Relay(BUSY, OK)
    assert sender.process(body, now=lambda: NOW, transport=relay) == "retry_scheduled"
    (retry,) = queued(aws)
    assert sender.process(retry, now=lambda: NOW + 60, transport=relay) == "delivered"
    assert sender.process(retry, now=lambda: NOW + 61, transport=relay) == "already_done"
    # the same for a duplicate of an attempt that failed again: refused, nothing sent
    delivering.send("b@example.net")
    (body,) = queued(aws)
    relay = Relay(BUSY)
    assert sender.process(body, now=lambda: NOW, transport=relay) == "retry_scheduled"
    (retry,) = queued(aws)
    assert sender.process(retry, now=lambda: NOW + 60, transport=relay) == "retry_scheduled"
    assert len(queued(aws)) == 1
    assert sender.process(retry, now=lambda: NOW + 61, transport=relay) == "already_done"
    assert len(relay.sent) == 2 and queued(aws) == []


def test_a_throttled_send_comes_back_without_counting_as_an_attempt(delivering, aws, delays):
    delivering.send("a@example.net")
    (body,) = queued(aws)
    throttled = reply(smtp.Outcome.THROTTLED, 451, "Amazon SES: TooManyRequestsException: slow down")
    relay = Relay(throttled, throttled, OK)
    assert sender.process(body, now=lambda: NOW, transport=relay) == "throttled"
    (again,) = queued(aws)
    assert json.loads(again)["attempt"] == 0 and json.loads(again)["throttled"] == 1
    assert sender.process(again, now=lambda: NOW + 2, transport=relay) == "throttled"
    (again,) = queued(aws)
    assert sender.process(again, now=lambda: NOW + 6, transport=relay) == "delivered"
    # the pauses grow (jittered: between half and all of 2 s, then of 4 s), and no failed event was written
    assert 1 <= delays[0] <= 2 and 2 <= delays[1] <= 4
    assert stored_events(aws, "failed") == []
    (event,) = stored_events(aws, "delivered")
    assert event["delivery-status"]["attempt-no"] == 1


def test_an_erased_recipients_job_sends_nothing(delivering, aws):
    delivering.send("a@example.net")
    (body,) = queued(aws)
    copy = delivering.copy("a@example.net")
    assert erasure.mark_erasing(aws.ref("DataTable"), copy["pk"])
    relay = Relay(OK)
    assert sender.process(body, now=lambda: NOW, transport=relay) == "gone"
    assert relay.sent == []


def test_testmode_queues_nothing(delivering, aws):
    delivering.send("a@example.net", extra=[("o:testmode", "yes")])
    assert queued(aws) == []


def test_malformed_jobs_are_refused():
    for body in (
        "{}",
        "not json",
        json.dumps({"copy_pk": "MSG#x", "sender": "", "from_header": "", "subject": "", "size": 0}),
    ):
        with pytest.raises(ValueError, match="not a send job"):
            SendJob.from_body(body)


def test_outcomes_are_counted_once_in_stats_and_sent_to_their_webhooks(delivering, aws, invoke):
    from opentracking.webhooks import subscriptions

    for kind in ("accepted", "delivered", "permanent_fail", "temporary_fail"):
        subscriptions.create("example.com", kind, [f"https://hooks.example.net/{kind}"])
    delivering.send("ok@example.net, gone@example.net, busy@example.net")
    answers = {"ok@example.net": OK, "gone@example.net": BOUNCE, "busy@example.net": BUSY}
    for body in queued(aws):
        copy_pk = SendJob.from_body(body).copy_pk
        recipient = next(r for r in answers if delivering.copy(r)["pk"] == copy_pk)
        sender.process(body, transport=Relay(answers[recipient]))  # now: the stats window ends now
    delivering.consume()
    delivering.consume()  # a replayed stream counts nothing twice
    status, body = invoke(
        "api", "GET", "/v3/example.com/stats/total", query="event=delivered&event=failed&event=accepted"
    )
    assert status == 200
    totals = {"accepted": 0, "delivered": 0, "permanent": 0, "bounce": 0, "temporary": 0}
    for row in body["stats"]:
        totals["accepted"] += row["accepted"]["total"]
        totals["delivered"] += row["delivered"]["total"]
        totals["permanent"] += row["failed"]["permanent"]["total"]
        totals["bounce"] += row["failed"]["permanent"]["bounce"]
        totals["temporary"] += row["failed"]["temporary"]["total"]
    assert totals == {"accepted": 3, "delivered": 1, "permanent": 1, "bounce": 1, "temporary": 1}
    sqs = boto3.client("sqs")
    posted: set[tuple[str, str, str]] = set()
    while hooks := sqs.receive_message(QueueUrl=aws.ref("WebhookQueue"), MaxNumberOfMessages=10).get(
        "Messages"
    ):
        for message in hooks:
            body = json.loads(message["Body"])
            posted.add((body["url"].rsplit("/", 1)[1], body["event"]["event"], body["event"]["id"]))
            # every event names the same stored copy, at the API's storage URL (messages.stored)
            storage = body["event"]["storage"]
            assert storage["url"].endswith(f"/v3/domains/example.com/messages/{storage['key']}"), storage
            sqs.delete_message(QueueUrl=aws.ref("WebhookQueue"), ReceiptHandle=message["ReceiptHandle"])
    # one delivery per event and URL (a replay may enqueue again: receivers deduplicate on the event id)
    assert sorted((url, name) for url, name, _id in posted) == [
        *[("accepted", "accepted")] * 3,
        ("delivered", "delivered"),
        ("permanent_fail", "failed"),
        ("temporary_fail", "failed"),
    ]


def test_deliverytime_holds_the_copies_until_then(delivering, aws):
    at = time.time() + 3600
    delivering.send(
        "a@example.net", extra=[("o:deliverytime", format_datetime(datetime.fromtimestamp(at, UTC)))]
    )
    (body,) = queued(aws)
    assert SendJob.from_body(body).next_at == pytest.approx(int(at), abs=1)  # RFC 2822 has whole seconds
    relay = Relay(OK)
    assert sender.process(body, transport=relay) == "waiting" and relay.sent == []
    assert sender.process(body, now=lambda: at + 1, transport=relay) == "delivered"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("tomorrow", "'o:deliverytime' must be an RFC 2822 date with its time zone"),
        ("Mon, 07 Dec 2026 10:00:00", "'o:deliverytime' must be an RFC 2822 date with its time zone"),
        (
            format_datetime(datetime.fromtimestamp(time.time() + 4 * 86400, UTC)),
            "at most 3 days in the future",
        ),
    ],
    ids=["words", "no-time-zone", "four-days-ahead"],  # the same ids in every worker (xdist)
)
def test_a_bad_deliverytime_is_a_400_and_nothing_is_queued(delivering, aws, invoke, value, message):
    fields = [("from", "s@example.com"), ("to", "a@example.net"), ("text", "hi"), ("o:deliverytime", value)]
    status, body = invoke("submit", "POST", "/v3/example.com/messages", fields=fields)
    assert status == 400 and message in body["message"]
    assert queued(aws) == []


def test_a_past_deliverytime_sends_at_once(delivering, aws):
    delivering.send("a@example.net", extra=[("o:deliverytime", "Thu, 01 Jan 2026 00:00:00 +0000")])
    (body,) = queued(aws)
    assert SendJob.from_body(body).next_at is None


def test_a_copy_whose_stored_object_is_gone_fails_once_and_is_not_retried(delivering, aws):
    """The bucket's lifecycle rule expired the copy (or it was removed) before it could be sent: a failed
    event that says so, not a job going round until the dead-letter queue."""
    delivering.send("a@example.net")
    (body,) = queued(aws)
    copy = delivering.copy("a@example.net")
    boto3.client("s3").delete_object(Bucket=aws.ref("MessageBucket"), Key=copy["s3_key"])
    relay = Relay(OK)
    assert sender.process(body, now=lambda: NOW, transport=relay) == "failed"
    assert relay.sent == [] and queued(aws) == []
    (event,) = stored_events(aws, "failed")
    assert (event["severity"], event["reason"]) == ("permanent", "generic")
    assert "stored copy is gone" in event["delivery-status"]["message"]
    assert sender.process(body, now=lambda: NOW + 5, transport=relay) == "already_done"
