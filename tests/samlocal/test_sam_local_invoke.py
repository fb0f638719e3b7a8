"""`sam local invoke` runs every sample event in events/ through its function, built by `sam build` and run in
a container exactly as SAM runs it; each response and its effect in AWS (moto) is checked."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
import time

import pytest

from devstack.invoke import function_for_event
from devstack.template import ROOT, Stack
from opentracking.tracking.pixel import GIF

from .conftest import SAM, SamLocal, metrics_logged, parse_response, stored_copies

EVENT_FILES = sorted((ROOT / "events").glob("*.json"))


# Our engine publishes ports through docker's userland proxy (no iptables rules on a shared machine), which
# accepts a connection before the emulator in the container listens; sam local takes that for readiness
# and gives up after three quick attempts (about 0.7 s). On two loaded cores the emulator (arm64, under
# qemu) sometimes starts later than that, and the event never reaches it. Only that case is retried: the
# emulator's own log then shows it never received an invocation, so the function did not run.
ATTEMPTS = 3
EMULATOR_RECEIVED = "(rapid) invoke: -> POST"


def never_reached_the_emulator(result: subprocess.CompletedProcess) -> bool:
    return "No response from invoke container" in result.stderr and EMULATOR_RECEIVED not in result.stderr


# The longest function timeout in the template is 120 s; sam local adds its own start (about 15 s here).
INVOKE_DEADLINE = 300.0


def invoke(sam_local: SamLocal, event_file, options: list[str] | None = None) -> subprocess.CompletedProcess:
    """`sam local invoke` of the event's function; `options` replace the tier's (another built template)."""
    function = function_for_event(Stack(), json.loads(event_file.read_text()))
    for _ in range(ATTEMPTS):
        started = time.monotonic()
        try:
            result = subprocess.run(
                [
                    SAM,
                    "local",
                    "invoke",
                    function,
                    "--event",
                    str(event_file),
                    *(options or sam_local.options()),
                ],
                cwd=ROOT,
                env=sam_local.environment(),
                capture_output=True,
                text=True,
                timeout=INVOKE_DEADLINE,
                check=False,
            )
        except subprocess.TimeoutExpired as expired:
            output = (expired.stderr or b"")[-4000:]
            pytest.fail(
                f"sam local invoke {function} with {event_file.name} did not end within "
                f"{INVOKE_DEADLINE:.0f} s; its output so far:\n{output!r}",
                pytrace=False,
            )
        print(f"sam local invoke {function} ({event_file.name}): {time.monotonic() - started:.1f} s")
        if not never_reached_the_emulator(result):
            break
        print(f"sam local invoke {function}: the event never reached the emulator; invoking again")
    return result


@pytest.fixture(scope="session")
def invocations(sam_local: SamLocal) -> dict[str, subprocess.CompletedProcess]:
    """Every sample event, invoked once. One at a time: sam local counts a function's timeout from the moment
    its container's port opens, and the pixel's is 3 s; in parallel on two cores, the cold start alone can
    take that long (alone it takes about 0.4 s)."""
    started = time.monotonic()
    results = {path.name: invoke(sam_local, path) for path in EVENT_FILES}
    print(f"sam local invoke: {len(results)} events in {time.monotonic() - started:.0f} s")
    return results


def response_of(invocations: dict, name: str) -> dict:
    result = invocations[name]
    assert result.returncode == 0, result.stderr[-4000:]
    # the function's own timeout ("Task timed out after 3.00 seconds"), not SAM's words about its image lock
    timed_out = "Task timed out" in result.stderr or "timed out after" in result.stderr
    assert not timed_out, result.stderr[-4000:]
    response = parse_response(result.stdout)
    # a handler that raised (or could not be imported) still exits 0: its error is the response
    assert "errorType" not in response, response
    return response


def test_every_sample_event_has_a_function_and_an_answer(invocations):
    assert sorted(invocations) == [path.name for path in EVENT_FILES]
    for name in invocations:
        response_of(invocations, name)


@pytest.mark.parametrize("name", ["pixel_get.json", "pixel_head.json"])
def test_pixel_answers_the_gif_for_a_forged_token(invocations, name):
    response = response_of(invocations, name)
    assert response["statusCode"] == 200
    headers = {key.lower(): value for key, value in response["headers"].items()}
    assert headers["content-type"] == "image/gif"
    assert headers["cache-control"] == "no-store, no-cache, must-revalidate, max-age=0"
    assert headers["content-length"] == str(len(GIF)) == "43"
    if name == "pixel_get.json":
        assert response["isBase64Encoded"] is True
        assert base64.b64decode(response["body"]) == GIF
    # the token in the sample events is forged: counted, not recorded
    metrics = metrics_logged(invocations[name].stderr)
    assert metrics.get("InvalidToken") == 1, metrics
    assert "OpenRecorded" not in metrics


def test_click_with_a_forged_token_leads_nowhere(invocations):
    response = response_of(invocations, "click_get.json")
    assert response["statusCode"] == 404
    assert "Location" not in response["headers"]
    assert "This link is not valid" in response["body"]


def test_pixel_records_nothing_for_a_forged_token(sam_local, invocations):
    response_of(invocations, "pixel_get.json")
    ddb = sam_local.backend.client("dynamodb")
    opens = ddb.scan(
        TableName=sam_local.backend.resource("DataTable"),
        FilterExpression="begins_with(sk, :open)",
        ExpressionAttributeValues={":open": {"S": "OPEN#"}},
    )["Items"]
    forged = [item for item in opens if "AQEAAAAAAAAAAAAAAAAAAAAAZXhhbXBsZS5jb20" in json.dumps(item)]
    assert forged == []


def test_submit_messages_stores_one_tracked_copy_per_recipient(sam_local, invocations):
    response = response_of(invocations, "submit_messages.json")
    assert response["statusCode"] == 200
    body = json.loads(response["body"])
    assert body["message"] == "Queued. Thank you."
    assert body["id"].startswith("<") and body["id"].endswith(">")
    for recipient in ("alice@example.net", "bob@example.org"):
        ((record, message),) = stored_copies(sam_local.backend, recipient)
        assert record["message_id"] == body["id"].strip("<>")
        assert record["tags"] == ["newsletter"]
        # open tracking is on (o:tracking-opens=yes on a tracked domain): the copy carries its own pixel
        assert record["tracked"] is True
        assert b"https://email.example.com/o/" in message


def test_submit_mime_stores_the_raw_message_with_a_pixel(sam_local, invocations):
    response = response_of(invocations, "submit_mime.json")
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["message"] == "Queued. Thank you."
    ((record, message),) = stored_copies(sam_local.backend, "carol@example.net")
    assert record["tags"] == ["receipts"]  # from the X-Mailgun-Tag header
    assert metrics_logged(invocations["submit_mime.json"].stderr)["CopiesTracked"] == 1
    assert record["tracked"] is True
    assert b"Subject: Raw MIME" in message
    assert b"https://email.example.com/o/" in message


def test_scheduled_dns_health_check_writes_its_report(sam_local, invocations):
    response = response_of(invocations, "dns_health_schedule.json")
    assert response["report"].startswith("health/")
    assert response["totals"]["checked"] >= 1
    s3 = sam_local.backend.client("s3")
    report = s3.get_object(Bucket=sam_local.backend.resource("MessageBucket"), Key=response["report"])
    assert report["ContentLength"] > 0


def test_management_api_lists_the_domain(invocations):
    response = response_of(invocations, "api_list_domains.json")
    assert response["statusCode"] == 200
    (domain,) = [item for item in json.loads(response["body"])["items"] if item["name"] == "example.com"]
    assert domain["state"] == "active"  # its tracking CNAME was verified


def test_webhooks_api_lists_no_webhooks_yet(invocations):
    response = response_of(invocations, "webhooks_list.json")
    assert response["statusCode"] == 200
    assert json.loads(response["body"]) == {"webhooks": {}}


@pytest.mark.parametrize(
    ("name", "metric"),
    [
        # the raw open's copy does not exist (the sample is not tied to a stored message): counted, skipped
        ("events_stream_open.json", "OpenWithoutCopy"),
        # the spilled open's token is forged: dropped and counted, never retried
        ("open_redrive_spill.json", "InvalidToken"),
        # the delivery's URL is a loopback address, which a deployed sender refuses (SSRF guard)
        ("webhook_delivery.json", "WebhookRefused"),
        # the job's copy was never stored (the sample is not tied to a submission): counted, not sent
        ("send_job.json", "SendJobWithoutCopy"),
        # SES reports on a copy that was never stored (the sample is not tied to a submission): counted
        ("ses_report.json", "SesReportWithoutCopy"),
    ],
)
def test_queue_consumers_handle_every_record(invocations, name, metric):
    assert response_of(invocations, name) == {"batchItemFailures": []}
    assert metrics_logged(invocations[name].stderr).get(metric) == 1


def _reported_ms(result: subprocess.CompletedProcess, pattern: str) -> float | None:
    """A duration the emulator reports: its INIT REPORT (the runtime's start and the handler's imports) or
    the first invocation's REPORT line."""
    found = re.search(pattern, result.stderr + result.stdout)
    return float(found.group(1)) if found else None


def test_the_build_ships_bytecode_and_a_first_invocation_is_timed_with_and_without(
    sam_local, tmp_path, record_property
):
    # What `make build` ships: every module of the layer and the functions with unchecked-hash bytecode,
    # which Python loads from read-only /opt and /var/task without comparing it to the source.
    build = sam_local.template.parent
    modules = [path for path in build.rglob("*.py") if "__pycache__" not in path.parts]
    assert len(modules) > 500
    missing, checked = [], []
    for module in modules:
        compiled = module.parent / "__pycache__" / f"{module.stem}.{sys.implementation.cache_tag}.pyc"
        if not compiled.exists():
            missing.append(module)
        elif compiled.read_bytes()[4:8] != b"\x01\x00\x00\x00":  # hash-based, source never checked
            checked.append(compiled)
    assert missing == [] and checked == []

    # The same build without its bytecode, invoked the same way: the gap stays visible (recorded, and
    # compared by `make bench`'s cold start case; not a timed assertion).
    bare = tmp_path / "build-without-bytecode"
    shutil.copytree(build, bare, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    event = ROOT / "events" / "pixel_get.json"
    timings = {}
    for name, template in (("with bytecode", build / "template.yaml"), ("without", bare / "template.yaml")):
        options = ["--template", str(template), *sam_local.backend.sam_options]
        options += sam_local.engine.sam_image_options
        started = time.monotonic()
        result = invoke(sam_local, event, options)
        timings[name] = {
            "sam_local_invoke_s": round(time.monotonic() - started, 2),
            "init_ms": _reported_ms(result, r"INIT REPORT\(durationMs: ([0-9.]+)\)"),
            "first_invocation_ms": _reported_ms(result, r"\tDuration: ([0-9.]+) ms"),
            "status": parse_response(result.stdout).get("statusCode") if result.returncode == 0 else None,
        }
        record_property(f"pixel first invocation, {name}", json.dumps(timings[name]))
    print(f"pixel first invocation under sam local: {json.dumps(timings)}")
    assert timings["with bytecode"]["status"] == 200
