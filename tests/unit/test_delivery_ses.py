"""Delivery through Amazon SES under moto: each copy handed to SESv2 SendEmail as stored (Content.Raw) under
the configuration set, and SES's reports, through EventBridge and the SES events queue, recorded as
Mailgun's delivered, failed and complained events. moto plays SES as the local stack does
(devstack.ses_simulator): the mailbox simulator's addresses report as AWS documents; the reports SES
sends in rarer cases (a transient bounce, a delay, a reject) are written here in AWS's documented JSON."""

from __future__ import annotations

import copy as copying
import json

import boto3
import pytest
from botocore.stub import Stubber
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from devstack.handlers import load_handler
from opentracking.core.aws import client
from opentracking.delivery import sender, ses, ses_events
from opentracking.delivery.jobs import SendJob
from opentracking.delivery.replies import Outcome

NOW = 1_900_000_000.0
SIMULATOR = "simulator.amazonses.com"


@pytest.fixture
def through_ses(world, aws, monkeypatch):
    for name, value in aws.function_environment("SenderFunction").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DELIVERY_TRANSPORT", "ses")
    monkeypatch.setenv("DELIVERY_RETRY_SCHEDULE", "60,600")
    monkeypatch.setenv("LOCAL_SES_MAX_SEND_RATE", "1000")
    sender.reset_cache()
    return world


def drain(aws, queue: str) -> list[str]:
    sqs = boto3.client("sqs")
    bodies: list[str] = []
    for _ in range(100):
        batch = sqs.receive_message(QueueUrl=aws.ref(queue), MaxNumberOfMessages=10).get("Messages", [])
        if not batch:
            return bodies
        for message in batch:
            bodies.append(message["Body"])
            sqs.delete_message(QueueUrl=aws.ref(queue), ReceiptHandle=message["ReceiptHandle"])
    return bodies


def send_all(aws) -> list[str]:
    return [str(sender.process(body, now=lambda: NOW)) for body in drain(aws, "SendQueue")]


def stored_events(aws, name: str) -> list[dict]:
    table = boto3.resource("dynamodb").Table(aws.ref("DataTable"))
    return [json.loads(i["payload"]) for i in table.scan()["Items"] if i.get("event") == name]


def by_recipient(events: list[dict]) -> dict[str, dict]:
    return {event["recipient"]: event for event in events}


def report(kind: str, copy: dict, body: dict, *, mail_timestamp="2030-03-17T17:46:40.000Z") -> str:
    """An EventBridge event carrying an SES report on `copy`, shaped as AWS documents them."""
    detail_field = {"Bounce": "bounce", "DeliveryDelay": "deliveryDelay", "Reject": "reject"}.get(kind)
    detail = {
        "eventType": kind,
        "mail": {
            "timestamp": mail_timestamp,
            "source": "s@example.com",
            "sendingAccountId": DEFAULT_ACCOUNT_ID,
            "messageId": copy.get("transport_id", "EXAMPLE-000000"),
            "destination": [copy["recipient"]],
            "headersTruncated": False,
            "commonHeaders": {"from": ["s@example.com"], "to": [copy["recipient"]], "subject": ""},
            "tags": {
                "ses:configuration-set": ["opentracking-local-SesConfigurationSet"],
                ses.COPY_TAG: [copy["pk"].removeprefix("COPY#")],
            },
        },
    }
    if detail_field:
        detail[detail_field] = body
    elif kind == "Rendering Failure":
        detail["failure"] = body
    return json.dumps({"version": "0", "source": "aws.ses", "detail-type": f"Email {kind}", "detail": detail})


def test_each_copy_is_handed_to_ses_as_stored_under_the_configuration_set(through_ses, aws):
    through_ses.send(f"success@{SIMULATOR}, ooto@{SIMULATOR}")
    assert send_all(aws) == ["sent", "sent"]
    sent = ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
    s3 = boto3.client("s3")
    for recipient in (f"success@{SIMULATOR}", f"ooto@{SIMULATOR}"):
        copy = through_ses.copy(recipient)
        stored = s3.get_object(Bucket=aws.ref("MessageBucket"), Key=copy["s3_key"])["Body"].read()
        (message,) = [m for m in sent if m.destinations == [recipient]]
        assert message.raw_data == stored.decode()  # byte for byte, with this recipient's own pixel
        assert message.source == "s@example.com"
        assert (copy["delivery"], copy["transport_id"]) == ("sent", message.id)
    # each copy tagged with its id and sent under the deployment's configuration set, which SES repeats
    tags = [json.loads(body)["detail"]["mail"]["tags"] for body in drain(aws, "SesEventsQueue")]
    assert {t["ses:configuration-set"][0] for t in tags} == {aws.ref("SesConfigurationSet")}
    assert {t[ses.COPY_TAG][0] for t in tags} == {
        through_ses.copy(r)["pk"].removeprefix("COPY#") for r in (f"success@{SIMULATOR}", f"ooto@{SIMULATOR}")
    }
    # nothing is delivered until SES says so
    assert stored_events(aws, "delivered") == []


def test_the_mailbox_simulators_reports_become_mailgun_events(through_ses, aws, lambda_context):
    addresses = [f"{name}@{SIMULATOR}" for name in ("success", "bounce", "complaint", "suppressionlist")]
    through_ses.send(", ".join(addresses))
    send_all(aws)
    handler = load_handler("functions/ses_events")
    bodies = drain(aws, "SesEventsQueue")
    records = [{"messageId": str(i), "body": b, "eventSource": "aws:sqs"} for i, b in enumerate(bodies)]
    assert handler.lambda_handler({"Records": records}, lambda_context) == {"batchItemFailures": []}

    delivered = by_recipient(stored_events(aws, "delivered"))
    assert set(delivered) == {f"success@{SIMULATOR}", f"complaint@{SIMULATOR}"}
    status = delivered[f"success@{SIMULATOR}"]["delivery-status"]
    assert (status["code"], status["message"]) == (250, "250 2.6.0 Message received")
    assert status["attempt-no"] == 1 and status["mx-host"] == "127.0.0.1"
    assert delivered[f"success@{SIMULATOR}"]["envelope"]["sender"] == "s@example.com"

    failed = by_recipient(stored_events(aws, "failed"))
    bounce, suppressed = failed[f"bounce@{SIMULATOR}"], failed[f"suppressionlist@{SIMULATOR}"]
    assert (bounce["severity"], bounce["reason"], bounce["delivery-status"]["code"]) == (
        "permanent",
        "bounce",
        550,
    )
    assert bounce["delivery-status"]["message"] == "550 5.1.1 user unknown"
    assert (suppressed["severity"], suppressed["reason"]) == ("permanent", "suppress-bounce")
    assert "suppression list" in suppressed["delivery-status"]["message"]

    (complaint,) = stored_events(aws, "complained")
    assert complaint["recipient"] == f"complaint@{SIMULATOR}" and complaint["tags"] == ["launch"]
    assert through_ses.copy(f"complaint@{SIMULATOR}")["delivery"] == "delivered"

    # the stream consumer counts them once, as Mailgun's stats do
    through_ses.consume()
    table = boto3.resource("dynamodb").Table(aws.ref("DataTable"))
    totals: dict[str, int] = {}
    for item in table.scan()["Items"]:
        if item["pk"].startswith("STATS#example.com#launch#"):
            for field in ("delivered_total", "failed_permanent_bounce", "failed_permanent_suppress-bounce"):
                totals[field] = totals.get(field, 0) + int(item.get(field, 0))
            totals["complained_total"] = totals.get("complained_total", 0) + int(
                item.get("complained_total", 0)
            )
    assert totals == {
        "delivered_total": 2,
        "failed_permanent_bounce": 1,
        "failed_permanent_suppress-bounce": 1,
        "complained_total": 1,
    }

    # SES's reports again (EventBridge and SQS deliver at least once): nothing recorded twice
    assert [ses_events.process(body) for body in bodies].count("recorded") == 0
    assert len(stored_events(aws, "delivered")) == 2 and len(stored_events(aws, "failed")) == 2


def test_a_transient_bounce_is_retried_on_our_schedule(through_ses, aws, delays):
    through_ses.send("soft@example.net")
    send_all(aws)
    drain(aws, "SesEventsQueue")
    copy = through_ses.copy("soft@example.net")
    transient = {
        "bounceType": "Transient",
        "bounceSubType": "MailboxFull",
        "bouncedRecipients": [
            {
                "emailAddress": "soft@example.net",
                "status": "4.2.2",
                "diagnosticCode": "smtp; 452 4.2.2 Mailbox full",
            }
        ],
        "timestamp": "2030-03-17T17:50:00.000Z",
    }
    body = report("Bounce", copy, transient)
    assert ses_events.process(body) == "recorded"
    (failure,) = stored_events(aws, "failed")
    assert (failure["severity"], failure["reason"], failure["delivery-status"]["code"]) == (
        "temporary",
        "generic",
        452,
    )
    assert failure["delivery-status"]["retry-seconds"] == 60
    assert "delivery" not in through_ses.copy("soft@example.net")  # sendable again
    (retry,) = drain(aws, "SendQueue")
    assert SendJob.from_body(retry).attempt == 1
    # the same report again queues the retry again; the claim lets one of them through
    assert ses_events.process(body) == "duplicate"
    again = drain(aws, "SendQueue")
    later = NOW + 86400  # each retry is due a while after the report
    results = [str(sender.process(job, now=lambda: later)) for job in [retry, *again]]
    assert sorted(results) == ["already_done", "sent"]
    assert len(ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages) == 2
    copy = through_ses.copy("soft@example.net")
    assert (copy["delivery"], int(copy["delivery_attempts"])) == ("sent", 2)
    # bounced again: the last retry of the schedule; and again, with the schedule spent: permanent, too old
    for timestamp in ("2030-03-17T18:00:00.000Z", "2030-03-17T18:10:00.000Z"):
        transient["timestamp"] = timestamp
        assert (
            ses_events.process(report("Bounce", through_ses.copy("soft@example.net"), transient))
            == "recorded"
        )
        for job in drain(aws, "SendQueue"):
            assert sender.process(job, now=lambda: later) == "sent"
    last = max(stored_events(aws, "failed"), key=lambda e: e["delivery-status"]["attempt-no"])
    assert (last["severity"], last["reason"], last["delivery-status"]["attempt-no"]) == (
        "permanent",
        "old",
        3,
    )
    assert through_ses.copy("soft@example.net")["delivery"] == "failed"
    assert drain(aws, "SendQueue") == []


@pytest.mark.parametrize(
    ("delay_type", "reason"),
    [("MailboxFull", "generic"), ("SpamDetected", "espblock"), ("IPFailure", "espblock")],
)
def test_a_delivery_delay_is_temporary_and_left_to_ses(through_ses, aws, delay_type, reason):
    through_ses.send("slow@example.net")
    send_all(aws)
    copy = through_ses.copy("slow@example.net")
    delay = {
        "timestamp": "2030-03-17T17:55:00.000Z",
        "delayType": delay_type,
        "expirationTime": "2030-03-18T17:46:40.000Z",
        "delayedRecipients": [
            {
                "emailAddress": "slow@example.net",
                "status": "4.4.1",
                "diagnosticCode": "smtp; 421 4.4.1 Try later",
            }
        ],
    }
    assert ses_events.process(report("DeliveryDelay", copy, delay)) == "recorded"
    (failure,) = stored_events(aws, "failed")
    assert (failure["severity"], failure["reason"], failure["delivery-status"]["code"]) == (
        "temporary",
        reason,
        421,
    )
    assert delay_type in failure["delivery-status"]["description"]
    assert through_ses.copy("slow@example.net")["delivery"] == "sent"  # SES keeps trying; no retry of ours
    assert drain(aws, "SendQueue") == []


@pytest.mark.parametrize(
    ("kind", "body", "text"),
    [
        ("Reject", {"reason": "Bad content"}, "Bad content"),
        (
            "Rendering Failure",
            {"errorMessage": "Attribute 'name' is not present in the rendering data.", "templateName": "T"},
            "is not present",
        ),
    ],
)
def test_a_reject_or_a_rendering_failure_is_permanent(through_ses, aws, kind, body, text):
    through_ses.send("x@example.net")
    send_all(aws)
    copy = through_ses.copy("x@example.net")
    assert ses_events.process(report(kind, copy, body)) == "recorded"
    (failure,) = stored_events(aws, "failed")
    assert (failure["severity"], failure["reason"]) == ("permanent", "generic")
    assert text in failure["delivery-status"]["description"]
    assert through_ses.copy("x@example.net")["delivery"] == "failed"


def test_a_report_never_reverses_an_outcome(through_ses, aws):
    through_ses.send(f"success@{SIMULATOR}")
    send_all(aws)
    for body in drain(aws, "SesEventsQueue"):
        ses_events.process(body)
    copy = through_ses.copy(f"success@{SIMULATOR}")
    late_bounce = {"bounceType": "Permanent", "bounceSubType": "General", "timestamp": "2030-03-17T19:00:00Z"}
    assert ses_events.process(report("Bounce", copy, late_bounce)) == "duplicate"
    assert (
        stored_events(aws, "failed") == []
        and through_ses.copy(f"success@{SIMULATOR}")["delivery"] == "delivered"
    )


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        json.dumps({"source": "aws.s3", "detail": {"eventType": "Delivery"}}),
        json.dumps({"source": "aws.ses", "detail": {"eventType": "Teleport"}}),
        json.dumps(
            {
                "source": "aws.ses",
                "detail": {"eventType": "Delivery", "mail": {"tags": {ses.COPY_TAG: ["../x"]}}},
            }
        ),
    ],
)
def test_what_is_not_an_ses_report_of_ours_is_refused(aws, body):
    with pytest.raises(ValueError, match=r"not an|bad copy tag"):
        ses_events.process(body)


def test_reports_on_other_mail_and_sends_are_ignored(aws):
    other = {"source": "aws.ses", "detail": {"eventType": "Delivery", "mail": {"tags": {}}, "delivery": {}}}
    assert ses_events.process(json.dumps(other)) == "ignored"
    send = copying.deepcopy(other)
    send["detail"] = {"eventType": "Send", "mail": {"tags": {ses.COPY_TAG: ["ab"]}}, "send": {}}
    assert ses_events.process(json.dumps(send)) == "ignored"


@pytest.mark.parametrize(
    ("code", "outcome", "result"),
    [
        ("MessageRejected", Outcome.PERMANENT, "failed"),
        ("MailFromDomainNotVerifiedException", Outcome.PERMANENT, "failed"),
        ("TooManyRequestsException", Outcome.THROTTLED, "throttled"),
        ("LimitExceededException", Outcome.TEMPORARY, "retry_scheduled"),
        ("SendingPausedException", Outcome.TEMPORARY, "retry_scheduled"),
    ],
)
def test_what_ses_refuses_is_classified(through_ses, aws, delays, code, outcome, result):
    through_ses.send("r@example.net")
    (job,) = drain(aws, "SendQueue")
    ses_client = client("sesv2")
    with Stubber(ses_client) as stub:
        stub.add_client_error(
            "send_email", service_error_code=code, service_message="refused", http_status_code=400
        )
        assert str(sender.process(job, now=lambda: NOW)) == result
    copy = through_ses.copy("r@example.net")
    if outcome is Outcome.PERMANENT:
        (failure,) = stored_events(aws, "failed")
        assert failure["delivery-status"]["message"] == f"Amazon SES: {code}: refused"
        assert failure["delivery-status"]["code"] == 550 and copy["delivery"] == "failed"
    elif outcome is Outcome.THROTTLED:
        assert stored_events(aws, "failed") == [] and int(copy["delivery_attempts"]) == 0
        assert json.loads(drain(aws, "SendQueue")[0])["throttled"] == 1
    else:
        (failure,) = stored_events(aws, "failed")
        assert failure["severity"] == "temporary" and failure["delivery-status"]["code"] == 451


def test_the_send_rate_is_read_from_the_account(aws, monkeypatch):
    monkeypatch.setenv("LOCAL_SES_MAX_SEND_RATE", "37")
    assert ses.max_send_rate() == 37.0
    with Stubber(client("sesv2")) as stub:
        stub.add_client_error("get_account", service_error_code="AccessDeniedException", http_status_code=403)
        assert ses.max_send_rate() == ses.SANDBOX_RATE


def test_the_pacer_spaces_sends_to_the_instances_share_of_the_rate(monkeypatch):
    clock = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        clock[0] += seconds

    monkeypatch.setattr(ses.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(ses.time, "sleep", sleep)
    monkeypatch.setenv("SENDER_CONCURRENCY", "4")
    pacer = ses.Pacer(read_rate=lambda: 20.0)  # 20 a second for the account: 5 a second for each of 4
    for _ in range(4):
        pacer.wait()
    assert slept == [0.2, 0.2, 0.2]
    clock[0] += 10  # idle for a while: the next send goes at once
    pacer.wait()
    assert slept == [0.2, 0.2, 0.2]


# --- a domain's connection settings: its transport, and Mailgun's require-tls and skip-verification -----


def test_a_domains_connection_settings_read_and_change_as_mailguns(world, aws, invoke, monkeypatch):
    status, body = invoke("api", "GET", "/v3/domains/example.com/connection")
    assert (status, body) == (
        200,
        {"connection": {"require_tls": False, "skip_verification": False, "delivery_transport": "none"}},
    )
    status, body = invoke(
        "api",
        "PUT",
        "/v3/domains/example.com/connection",
        fields={"require_tls": "true", "delivery_transport": "ses"},
    )
    assert status == 200 and body["message"].startswith("Domain connection settings have been updated")
    assert (body["require_tls"], body["skip_verification"], body["delivery_transport"]) == (
        True,
        False,
        "ses",
    )
    assert invoke("api", "GET", "/v4/domains/example.com")[1]["domain"]["require_tls"] is True
    # back to the deployment's transport
    status, body = invoke(
        "api", "PUT", "/v3/domains/example.com/connection", fields={"delivery_transport": "default"}
    )
    assert body["delivery_transport"] == "none" and body["require_tls"] is True


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "'require_tls', 'skip_verification' or 'delivery_transport' parameter is required"),
        ({"require_tls": "maybe"}, "'require_tls' parameter must be one of yes, no, true, false"),
        ({"delivery_transport": "pigeon"}, "'delivery_transport' must be one of none, smtp, ses, default"),
        ({"delivery_transport": "smtp"}, "needs the deployment's SMTP relay"),
    ],
)
def test_bad_connection_settings_are_refused_and_change_nothing(world, aws, invoke, fields, message):
    status, body = invoke("api", "PUT", "/v3/domains/example.com/connection", fields=fields)
    assert status == 400 and message in body["message"]
    assert invoke("api", "GET", "/v3/domains/example.com/connection")[1]["connection"] == {
        "require_tls": False,
        "skip_verification": False,
        "delivery_transport": "none",
    }
    assert invoke("api", "GET", "/v3/domains/missing.example/connection")[0] == 404


def test_a_domain_that_chose_ses_sends_through_it_whatever_the_deployments_transport(
    world, aws, invoke, monkeypatch
):
    for name, value in aws.function_environment("SenderFunction").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DELIVERY_TRANSPORT", "none")  # the deployment stores only
    monkeypatch.setenv("LOCAL_SES_MAX_SEND_RATE", "1000")
    sender.reset_cache()
    world.send("a@example.net")
    assert drain(aws, "SendQueue") == []  # nothing queued while the domain follows the deployment
    invoke("api", "PUT", "/v3/domains/example.com/connection", fields={"delivery_transport": "ses"})
    world.send(f"success@{SIMULATOR}")
    (job,) = drain(aws, "SendQueue")
    assert SendJob.from_body(job).transport == "ses"
    assert sender.process(job, now=lambda: NOW) == "sent"
    (message,) = ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
    assert message.destinations == [f"success@{SIMULATOR}"]


@pytest.mark.parametrize(
    ("domain_setting", "extra", "header", "expected"),
    [
        ("false", (), None, "SesConfigurationSet"),
        ("true", (), None, "SesRequireTlsConfigurationSet"),
        ("true", (("o:require-tls", "no"),), None, "SesConfigurationSet"),  # the message's setting wins
        ("false", (), "yes", "SesRequireTlsConfigurationSet"),  # X-Mailgun-Require-TLS
    ],
)
def test_require_tls_sends_under_the_configuration_set_that_requires_it(
    through_ses, aws, invoke, domain_setting, extra, header, expected
):
    invoke("api", "PUT", "/v3/domains/example.com/connection", fields={"require_tls": domain_setting})
    headers = (("h:X-Mailgun-Require-TLS", header),) if header else ()
    through_ses.send(f"success@{SIMULATOR}", extra=(*extra, *headers))
    (job,) = drain(aws, "SendQueue")
    assert sender.process(job, now=lambda: NOW) == "sent"
    (report_body,) = [b for b in drain(aws, "SesEventsQueue") if '"Send"' in b]
    assert json.loads(report_body)["detail"]["mail"]["tags"]["ses:configuration-set"] == [aws.ref(expected)]
