"""Case 4: submitting a 50 KB HTML message to 1, 100 and 1,000 recipients through
`opentracking.messages.submission`
(plan, track, store), with AWS answered in-process at the botocore layer: CPU per recipient (process time,
so the S3 upload threads count) and AWS requests per recipient. Target: at most 0.3 ms CPU per additional
recipient.

Both submission routes are measured: form fields (`/messages`, what the SDKs send) and raw MIME
(`/messages.mime`), and the MIME route with click tracking on. Side by side, the per-recipient work the
current design cannot avoid is measured on its own (one stubbed S3 PutObject of the copy, splicing its pixel
token into the message's template, the two records), as the floor of this design.

The sizes grow tenfold (1, 10, 100, 1,000). A size whose projected CPU time passes `MAX_RUN_S`
(BENCH_MAX_RUN_S) is not run; its row says so and gives the projection instead. The projection follows the
growth measured between the last two sizes run (from linear to quadratic), or linear growth after the first
size alone, never a guess from one point. The slope per additional recipient needs two sizes that ran; with
fewer its row says it was not measured. A bench reports what it could not measure; it never crashes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator

from bench import stubs
from bench.env import captured_output, environment, function_env, stub_stack
from bench.injection import synthetic_html, wrap
from bench.report import at_most, row
from bench.timing import median, repeated
from opentracking.http.forms import Form, UploadedFile

FUNCTION = "SubmitFunction"
HTML_BYTES = 50_000
TARGET_MS_PER_RECIPIENT = 0.3
MAX_RUN_S = float(os.environ.get("BENCH_MAX_RUN_S") or 240.0)


# (route, MIME, clicks): the bench domain tracks opens only; "mime, clicks" turns click tracking on for
# the message (o:tracking-clicks=htmlonly), so each copy's 123 links get a click token too.
ROUTES = (("form", False, False), ("mime", True, False), ("mime, clicks", True, True))


def make_form(recipients: int, *, mime: bool, clicks: bool = False) -> Form:
    html = synthetic_html(HTML_BYTES)
    to = [("to", f"reader{i:04d}@example.net") for i in range(recipients)]
    if mime:
        return Form(
            fields=[*to, ("o:tag", "newsletter"), *([("o:tracking-clicks", "htmlonly")] if clicks else [])],
            files=[UploadedFile("message", "message.eml", "message/rfc822", wrap(html.encode()))],
        )
    return Form(
        fields=[
            ("from", f"Newsletter <news@{stubs.BENCH_DOMAIN}>"),
            *to,
            ("subject", "Your weekly digest"),
            ("text", "Your weekly digest. Read it online at https://www.example.com/digest"),
            ("html", html),
            ("o:tag", "newsletter"),
        ]
    )


def submit(form: Form, *, mime: bool) -> dict:
    """submission.submit, then the metrics flush the handler's @metrics.log_metrics does."""
    from opentracking.core.config import settings
    from opentracking.core.observability import metrics
    from opentracking.messages import submission

    response = submission.submit(
        form, stubs.BENCH_DOMAIN, settings(), mime=mime, api_base="https://api.bench.test"
    )
    assert response["tracking"]["opens"], response
    metrics.flush_metrics()
    return response


@contextlib.contextmanager
def phase_timer() -> Iterator[dict[str, float]]:
    """CPU seconds spent in submission.plan, track and store_submission (submit looks them up at call
    time, so wrapping the module attributes times the real calls)."""
    from opentracking.messages import submission

    spent = {"plan": 0.0, "track": 0.0, "store": 0.0}
    originals = {"plan": submission.plan, "track": submission.track, "store": submission.store_submission}

    def timed(name: str, function):
        def wrapper(*args, **kwargs):
            started = time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] += time.process_time() - started

        return wrapper

    submission.plan = timed("plan", originals["plan"])
    submission.track = timed("track", originals["track"])
    submission.store_submission = timed("store", originals["store"])
    try:
        yield spent
    finally:
        submission.plan = originals["plan"]
        submission.track = originals["track"]
        submission.store_submission = originals["store"]


def per_recipient_floor(*, tiny: bool, with_put: bool = False) -> dict[str, float]:
    """CPU (ms) of the work this design does once per recipient, each piece on its own: the copy's token
    issued and spliced into the message's template, and its two records. (The copies of a message are
    stored once, as the template; `with_put` adds a PutObject of each copy, the design before that.)"""
    from opentracking.core import aws
    from opentracking.core.config import settings
    from opentracking.mail import splice
    from opentracking.mail.injection import inject
    from opentracking.storage import store
    from opentracking.tracking import tokens

    message = wrap(synthetic_html(HTML_BYTES).encode())
    prefix = f"https://email.{stubs.BENCH_DOMAIN}/o/"
    # The message is planned once (submission._track_by_template); per copy, its token goes into the template.
    template = splice.build(
        lambda token_for: inject(message, prefix + token_for("open")).message, lambda _: 72
    )
    assert template is not None
    s3 = aws.client("s3")
    item = {
        "pk": "COPY#" + "0" * 32,
        "sk": "COPY",
        "recipient": "reader0001@example.net",
        "tags": ["newsletter"],
        "payload": "x" * 700,
    }
    budget = 0.05 if tiny else 1.0
    keyring = tokens.KeyRing.from_secret(json.loads(stubs.TOKEN_SECRET))
    copy_id = tokens.new_copy_id()
    pieces = {
        "issue the pixel token": lambda: tokens.issue_token(keyring, copy_id, stubs.BENCH_DOMAIN),
        "splice the pixel token": lambda: template.fill(["A" * 72]),
        "2 records serialised": lambda: (store.serialize(item), store.serialize(item)),
    }
    if with_put:
        pieces["S3 PutObject of the copy"] = lambda: s3.put_object(
            Bucket=settings().bucket_name, Key="bench/copy.eml", Body=message, ContentType="message/rfc822"
        )
    return {
        name: median(repeated(call, budget_s=budget, min_reps=3)["cpu_s"]) * 1000
        for name, call in pieces.items()
    }


def projected_cpu_s(measured: list[tuple[int, float]], n: int) -> float:
    """CPU seconds a message to n recipients would take, from the sizes measured so far: the growth between
    the last two (an exponent between 1, linear, and 2, quadratic), else linear from the one."""
    (last_n, last_cpu) = measured[-1]
    exponent = 1.0
    if len(measured) >= 2:
        (prev_n, prev_cpu) = measured[-2]
        if prev_cpu > 0 and last_cpu > 0 and last_n > prev_n:
            exponent = min(2.0, max(1.0, math.log(last_cpu / prev_cpu) / math.log(last_n / prev_n)))
    return last_cpu * (n / last_n) ** exponent


def run(*, tiny: bool = False) -> dict:
    counts = (1, 3) if tiny else (1, 10, 100, 1000)
    stack = stub_stack()
    env = function_env(stack, FUNCTION)
    results: dict[str, dict] = {}
    with environment(env), stubs.AwsStub.from_env(env) as stub, captured_output():
        for route, mime, clicks in ROUTES:
            submit(make_form(1, mime=mime, clicks=clicks), mime=mime)  # warm: clients, key ring, settings
            per_count: dict[int, dict] = {}
            measured: list[tuple[int, float]] = []
            for n in counts:
                form = make_form(n, mime=mime, clicks=clicks)
                if measured:
                    projected = projected_cpu_s(measured, n)
                    if projected > MAX_RUN_S or per_count.get(measured[-1][0], {}).get("skipped"):
                        per_count[n] = {"skipped": True, "projected_cpu_s": projected}
                        continue
                stub.reset()
                with phase_timer() as phases:
                    timing = repeated(
                        lambda f=form, m=mime: submit(f, mime=m),
                        budget_s=0.05 if tiny else 3.0,
                        min_reps=1,
                    )
                runs = len(timing["cpu_s"])
                requests = stub.snapshot()
                per_count[n] = {
                    "cpu_s": median(timing["cpu_s"]),
                    "wall_s": median(timing["wall_s"]),
                    "runs": runs,
                    "phases_cpu_s": {name: spent / runs for name, spent in phases.items()},
                    "requests_per_message": {op: c / runs for op, c in requests["by_operation"].items()},
                    "requests_per_recipient": requests["api_calls"] / runs / n,
                    "writes_per_recipient": requests["writes"] / runs / n,
                }
                measured.append((n, per_count[n]["cpu_s"]))
            results[route] = per_count
        floor = per_recipient_floor(tiny=tiny)

    rows = []
    floor_ms = sum(floor.values())
    for route, per_count in results.items():
        for n, figures in per_count.items():
            if figures.get("skipped"):
                rows.append(
                    row(
                        "submission",
                        f"{route}: {n:,} recipients, CPU per message",
                        figures["projected_cpu_s"] * 1000,
                        "ms",
                        note=f"not run: projected over {MAX_RUN_S:.0f} s",
                    )
                )
                continue
            rows.append(
                row(
                    "submission",
                    f"{route}: {n:,} recipient(s), CPU per message",
                    figures["cpu_s"] * 1000,
                    "ms",
                    note=f"{figures['runs']} run(s); "
                    + ", ".join(f"{k} {v * 1000:,.1f} ms" for k, v in figures["phases_cpu_s"].items()),
                )
            )
            rows.append(
                row(
                    "submission",
                    f"{route}: {n:,} recipient(s), AWS requests per recipient",
                    figures["requests_per_recipient"],
                    "req",
                    note=", ".join(f"{op} {c:g}" for op, c in figures["requests_per_message"].items()),
                )
            )
        measured = [(n, f["cpu_s"]) for n, f in per_count.items() if not f.get("skipped")]
        if len(measured) < 2:
            rows.append(
                row(
                    "submission",
                    f"{route}: CPU per additional recipient",
                    None,
                    "ms",
                    target=f"<= {TARGET_MS_PER_RECIPIENT} ms",
                    note=f"not measured: only {len(measured)} size ran within {MAX_RUN_S:.0f} s",
                )
            )
            continue
        (low, low_cpu), (high, high_cpu) = measured[0], measured[-1]
        marginal = (high_cpu - low_cpu) / (high - low) * 1000
        per_count["cpu_ms_per_additional_recipient"] = marginal
        rows.append(
            row(
                "submission",
                f"{route}: CPU per additional recipient ({low} -> {high:,})",
                marginal,
                "ms",
                baseline=floor_ms,
                target=f"<= {TARGET_MS_PER_RECIPIENT} ms",
                met=at_most(marginal, TARGET_MS_PER_RECIPIENT),
                note="baseline: this design's per-recipient floor",
            )
        )
    rows.append(
        row(
            "submission",
            "per-recipient floor of this design (token + splice + 2 records)",
            floor_ms,
            "ms",
            target=f"<= {TARGET_MS_PER_RECIPIENT} ms",
            met=at_most(floor_ms, TARGET_MS_PER_RECIPIENT),
            note=", ".join(f"{name} {ms:.3f} ms" for name, ms in floor.items()),
        )
    )
    return {
        "rows": rows,
        "raw": {"html_bytes": HTML_BYTES, "max_run_s": MAX_RUN_S, "per_recipient_floor_ms": floor, **results},
    }
