"""Case: delivery. One recipient's 50 KB copy through the sender (`opentracking.delivery.sender.process`, the
SES transport, the template's default) and SES's report on it through `opentracking.delivery.ses_events`,
with AWS answered in-process at the botocore layer: CPU per copy and per report, and AWS requests per copy.

The copy is one of a message to many, stored once as the message's template (`messages.copies`): the
sender renders it as it sends it, the template read once per container and message. Side by side, the
floor: the transport call alone (`delivery.ses.send`: one SESv2 SendEmail of the copy, serialised, signed
and parsed as on AWS), which no design that sends through SES avoids. The sender's work beyond it (the job,
the claim, the rendering, the handoff) is the ratio.

And "store once, render on read" in pieces: rendering a copy from its template (issuing the copy's pixel
token and splicing it in, `mail.splice`) against reading a stored copy (one S3 GetObject, the design
before), and the submission's per-recipient floor with and without a PutObject of each copy.

Then the cost per million recipients delivered, at AWS list prices (us-east-1): SES's own price ($0.10
per 1,000 messages), the sender's and the SES events function's Lambda time (CPU measured here, scaled to
Lambda's share as the cost case does, plus assumed in-region latencies), SQS requests (the jobs, SES's
reports through EventBridge, Lambda's polling) and DynamoDB writes and reads. Against SES's price alone:
what opentracking adds on top of the mail itself.
"""

from __future__ import annotations

import json
import time

from bench import stubs
from bench.cost import (
    ASSUMED_LATENCY_MS,
    PRICES,
    item_bytes,
    lambda_billed_ms,
    lambda_compute,
    write_units,
)
from bench.env import architecture, captured_output, environment, function_env, memory_size, stub_stack
from bench.injection import synthetic_html, wrap
from bench.report import row
from bench.timing import median, repeated

COPY_PK = "COPY#" + "ab" * 16
S3_KEY = "messages/example.com/2026/12/07/bench/copy.eml"
HTML_BYTES = 50_000
SES_PER_MESSAGE = 0.10 / 1000
SQS_PER_REQUEST = 0.40 / 1e6
# SQS requests per copy: the job sent (1/10 of a SendMessageBatch), received and deleted by Lambda's poller
# (1/10 of a ReceiveMessage and of a DeleteMessageBatch); SES's two reports (Send, Delivery) each put by
# EventBridge (1 SendMessage) and received and deleted in batches of 10.
SQS_REQUESTS_PER_COPY = 0.1 + 0.1 + 0.1 + 2 * (1 + 0.1 + 0.1)
SES_REPORTS_PER_COPY = 2  # Send (ignored, acknowledged) and Delivery (recorded)
LATENCY_MS = {
    **ASSUMED_LATENCY_MS,
    "s3.GetObject": 20.0,
    "dynamodb.UpdateItem": 5.0,
    "dynamodb.BatchGetItem": 5.0,
    "sesv2.SendEmail": 30.0,
}
SUPPRESSION_READS = 3  # the recipient's bounce, complaint and unsubscribe records: consistent reads


def copy_item(job_body: str) -> dict:
    """The copy record as DynamoDB returns it to the sender's claim (and to the SES events function)."""
    return {
        "pk": {"S": COPY_PK},
        "sk": {"S": "COPY"},
        "type": {"S": "copy"},
        "recipient": {"S": "reader0001@example.net"},
        "recipient_domain": {"S": "example.net"},
        "message_id": {"S": "20261207120000.bench@example.com"},
        "domain": {"S": stubs.BENCH_DOMAIN},
        "s3_key": {"S": S3_KEY},
        "tags": {"L": [{"S": "newsletter"}]},
        "user_variables": {"S": "{}"},
        "expires_at": {"N": "1900000000"},
        "send_job": {"S": job_body},
        "delivery_attempts": {"N": "1"},
        "template": {"BOOL": True},
    }


def stored_template(message: bytes) -> bytes:
    """The message's template as the submission stores it: its pixel's place, for the bench's key ring."""
    from opentracking.mail import splice
    from opentracking.mail.injection import inject
    from opentracking.messages import copies
    from opentracking.tracking import tokens

    keyring = tokens.KeyRing.from_secret(json.loads(stubs.TOKEN_SECRET))
    source = copies.TokenSource(keyring, stubs.BENCH_DOMAIN, False, None)
    prefix = f"https://email.{stubs.BENCH_DOMAIN}/o/"
    template = splice.build(
        lambda token_for: inject(message, prefix + str(token_for(("open",)))).message,
        lambda key: len(source.for_copy(bytes(16))(key) or ""),
    )
    assert template is not None
    return copies.encode_template(template, source)


def ses_report() -> str:
    """SES's Delivery report on the copy, as EventBridge queues it (AWS's documented shape)."""
    detail = {
        "eventType": "Delivery",
        "mail": {
            "timestamp": "2026-12-07T12:00:00.000Z",
            "source": "news@example.com",
            "messageId": "0100019bench0000-00000000-0000-0000-0000-000000000000-000000",
            "destination": ["reader0001@example.net"],
            "headersTruncated": False,
            "commonHeaders": {"from": ["News <news@example.com>"], "subject": "November"},
            "tags": {
                "ses:configuration-set": ["opentracking-bench-SesConfigurationSet"],
                "opentracking-copy": [COPY_PK.removeprefix("COPY#")],
            },
        },
        "delivery": {
            "timestamp": "2026-12-07T12:00:01.200Z",
            "processingTimeMillis": 1200,
            "recipients": ["reader0001@example.net"],
            "smtpResponse": "250 2.0.0 OK",
            "reportingMTA": "a8-70.smtp-out.amazonses.com",
        },
    }
    return json.dumps(
        {"version": "0", "source": "aws.ses", "detail-type": "Email Delivered", "detail": detail}
    )


def run(*, tiny: bool = False) -> dict:
    stack = stub_stack()
    env = {**function_env(stack, "SenderFunction"), "DELIVERY_TRANSPORT": "ses"}
    message = wrap(synthetic_html(HTML_BYTES).encode())
    budget = 0.05 if tiny else 2.0
    with environment(env), captured_output():
        # Imported under the function's environment, as Lambda imports the handler (Powertools reads it).
        from opentracking.core.observability import metrics
        from opentracking.delivery import sender, ses, ses_events
        from opentracking.delivery.jobs import SendJob

        job = SendJob(COPY_PK, "news@example.com", "News <news@example.com>", "November", len(message))
        stub = stubs.AwsStub.from_env(
            env,
            items={COPY_PK: copy_item(job.tried(time.time()).to_body())},
            objects={S3_KEY: stored_template(message)},
        ).start()

        def send_one() -> None:
            assert sender.process(job.to_body()) == "sent"
            metrics.flush_metrics()  # as the handler's @metrics.log_metrics does

        sender.reset_cache()
        send_one()  # warm: clients, the send rate, settings
        stub.reset()
        copies = repeated(send_one, budget_s=budget, min_reps=3)
        per_copy = stub.snapshot()
        stub.reset()
        floor = repeated(
            lambda: ses.send(job.sender, "reader0001@example.net", message, copy_pk=COPY_PK),
            budget_s=budget,
            min_reps=3,
        )
        report = ses_report()

        def record_one() -> None:
            assert ses_events.process(report) == "recorded"
            metrics.flush_metrics()

        record_one()
        stub.reset()
        reports = repeated(record_one, budget_s=budget, min_reps=3)
        per_report = stub.snapshot()
        render = render_on_read(message, budget)
        stub.stop()
        costs = delivery_costs(stack, copies, floor, reports, per_copy, per_report, job, message)

    copy_ms, floor_ms, report_ms = costs["cpu_ms"]
    copy_requests, report_requests = costs["requests"]
    rows = [
        row(
            "delivery",
            "sender: CPU per copy (SES, 50 KB)",
            copy_ms,
            "ms",
            baseline=floor_ms,
            note="baseline: the transport call alone (one SendEmail of the copy); "
            + ", ".join(f"{op} {n:g}" for op, n in copy_requests.items()),
        ),
        row(
            "delivery",
            "SES events: CPU per Delivery report",
            report_ms,
            "ms",
            note=", ".join(f"{op} {n:g}" for op, n in report_requests.items()),
        ),
        row(
            "delivery",
            "store once: CPU to render a copy from its message's template",
            render["render_ms"],
            "ms",
            baseline=render["read_ms"],
            note="baseline: reading a stored copy (S3 GetObject, 50 KB, the design before); "
            f"its pixel token issued {render['token_ms']:.3f} ms, spliced {render['fill_ms']:.3f} ms",
        ),
        row(
            "delivery",
            "store once: submission's per-recipient floor (a PutObject per copy before)",
            render["floor_without_put_ms"],
            "ms",
            baseline=render["floor_ms"],
            target="<= 0.3 ms",
            met=render["floor_without_put_ms"] <= 0.3,
            note="baseline: the floor with a PutObject of each copy (the design before)",
        ),
        row(
            "delivery",
            "$ per million recipients delivered through SES",
            costs["total"],
            "USD",
            baseline=costs["ses"],
            note="baseline: SES's price alone; "
            + ", ".join(f"{k} ${v:.2f}" for k, v in costs["parts"].items()),
        ),
    ]
    raw = {
        "cpu_ms_per_copy": copy_ms,
        "cpu_ms_transport_floor": floor_ms,
        "cpu_ms_per_report": report_ms,
        "requests_per_copy": copy_requests,
        "requests_per_report": report_requests,
        "cost_per_million": costs,
        "render_on_read": render,
        "copy_bytes": len(message),
        "runs": {
            "copies": len(copies["cpu_s"]),
            "floor": len(floor["cpu_s"]),
            "reports": len(reports["cpu_s"]),
        },
    }
    return {"rows": rows, "raw": raw}


def render_on_read(message: bytes, budget: float) -> dict:
    """ "Store once, render on read" in pieces: a copy rendered from its message's template, against a
    stored copy read from S3; and the submission's per-recipient floor with and without a PutObject of
    each copy (bench.submission's floor)."""
    from bench.submission import per_recipient_floor
    from opentracking.core import aws
    from opentracking.core.config import settings
    from opentracking.mail import splice
    from opentracking.messages import copies
    from opentracking.storage import store
    from opentracking.tracking import tokens

    keyring = tokens.KeyRing.from_secret(json.loads(stubs.TOKEN_SECRET))
    template, params = splice.Template.decode(stored_template(message))  # as the sender caches it
    token_for = copies.TokenSource.from_params(keyring, params).for_copy(tokens.new_copy_id())
    token = token_for(("open",))
    aws.client("s3").put_object(Bucket=settings().bucket_name, Key=S3_KEY, Body=message)

    timings = {
        "render_ms": repeated(lambda: template.fill([token_for(("open",))]), budget_s=budget, min_reps=3),
        "token_ms": repeated(lambda: token_for(("open",)), budget_s=budget),
        "fill_ms": repeated(lambda: template.fill([token]), budget_s=budget, min_reps=3),
        "read_ms": repeated(
            lambda: store.get_object(settings().bucket_name, S3_KEY), budget_s=budget, min_reps=3
        ),
    }
    figures = {name: median(t["cpu_s"]) * 1000 for name, t in timings.items()}
    floor = per_recipient_floor(tiny=budget < 1, with_put=True)
    figures["floor_ms"] = sum(floor.values())
    figures["floor_without_put_ms"] = figures["floor_ms"] - floor["S3 PutObject of the copy"]
    return figures


def delivery_costs(
    stack, copies: dict, floor: dict, reports: dict, per_copy: dict, per_report: dict, job, message: bytes
) -> dict:
    """Dollars per million recipients delivered, by line item. Each Lambda function is billed per batch of
    10 (its SQS batch size): the CPU measured here and the AWS calls' assumed latencies, one after
    another."""
    from opentracking.delivery import events
    from opentracking.delivery.replies import Outcome, Reply
    from opentracking.storage import records, store

    copy_ms, floor_ms, report_ms = (median(r["cpu_s"]) * 1000 for r in (copies, floor, reports))
    copy_requests = {op: n / len(copies["cpu_s"]) for op, n in per_copy["by_operation"].items()}
    report_requests = {op: n / len(reports["cpu_s"]) for op, n in per_report["by_operation"].items()}

    def billed_per_item(function: str, cpu_ms: float, requests: dict[str, float]) -> float:
        memory, arch = memory_size(stack, function), architecture(stack, function)
        io_ms = sum(LATENCY_MS.get(op, 5.0) * n for op, n in requests.items())
        per_batch = lambda_billed_ms(cpu_ms * 10, memory, io_ms * 10)
        return lambda_compute(memory, arch, per_batch) / 10

    copy = store.deserialize(copy_item(job.to_body()))
    reply = Reply(Outcome.DELIVERED, 250, "250 2.0.0 OK", False, "198.51.100.25", 1.2, False, "0100019bench")
    event = events.delivered(copy, job, reply, time.time())
    event_item = records.event_record(
        COPY_PK,
        event,
        domain=copy["domain"],
        expires_at=int(copy["expires_at"]),
        recipient=copy["recipient"],
        message_id=copy["message_id"],
        tags=copy["tags"],
    )
    event_wru = write_units(item_bytes(store.serialize(event_item)), transactional=True) + write_units(
        item_bytes(store.serialize(event_item))  # the events index (GSI) copy
    )
    copy_wru = write_units(1024, transactional=True)  # the copy's state, in the same transaction
    claim_wru = write_units(1024 + len(job.to_body()))
    parts = {
        "SES": SES_PER_MESSAGE * 1e6,
        "Lambda requests": PRICES["lambda_per_request"] * (1 + SES_REPORTS_PER_COPY) / 10 * 1e6,
        "Lambda compute (sender)": billed_per_item("SenderFunction", copy_ms, copy_requests) * 1e6,
        "Lambda compute (SES events)": billed_per_item("SesEventsFunction", report_ms, report_requests) * 1e6,
        "SQS": SQS_REQUESTS_PER_COPY * SQS_PER_REQUEST * 1e6,
        "DynamoDB writes": (claim_wru + 1 + event_wru + copy_wru) * PRICES["dynamodb_wru"] * 1e6,
        # the report's eventually consistent GetItem, and the sender's check of the suppression lists (a
        # consistent read per record, found or not)
        "DynamoDB reads": (0.5 + SUPPRESSION_READS) * PRICES["dynamodb_rru"] * 1e6,
        # the message's template, read once per container and message (0 per copy once cached)
        "S3 GET": copy_requests.get("s3.GetObject", 0.0) * 0.0004 / 1000 * 1e6,
    }
    return {
        "parts": parts,
        "ses": parts["SES"],
        "total": sum(parts.values()),
        "cpu_ms": (copy_ms, floor_ms, report_ms),
        "requests": (copy_requests, report_requests),
    }
