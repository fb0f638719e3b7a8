"""The local stack (`make run`) at Mailgun's limits, started as a new user starts it: its own processes on
free loopback ports (devstack.process.start_stack), one tracked domain, then

- one message to N recipients (Mailgun's maximum, 1,000): time and resident memory per recipient, against
  a message to one recipient;
- pixel loads from one reader on one kept-alive connection, against a new connection each (a mail
  client reuses its connection; Nagle's algorithm once added 40 ms to each such load);
- M pixel loads of those copies from 8 concurrent readers: raw opens a second (the pixel answering)
  against opened events a second end to end (until the stats API counts every one), and the stack's
  resident memory (its own process and moto's) per 1,000 opens, first and last 1,000.
"""

from __future__ import annotations

import re
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from bench.report import row
from devstack.process import RunningStack, start_stack

CASE = "local stack"
DOMAIN = "bench.example.com"
READERS = 8
END_TO_END_TARGET = 200.0  # opened events a second (issue 26)
_PIXEL = re.compile(rb"/o/[A-Za-z0-9_-]{16,}")


def _resident_mb(pid: int) -> float:
    """Resident memory of a process and its children (the stack runs moto in a child)."""
    total_kb = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(child) for child in children.read_text().split()]
    for each in pids:
        status = Path(f"/proc/{each}/status")
        if status.exists():
            for line in status.read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
    return total_kb / 1024


def _one_reader(stack: RunningStack, paths: list[str], *, kept_alive: bool = False) -> float:
    """The median time of one pixel load, one after another: on one connection, or a new one each time."""
    times = []
    with requests.Session() as session:
        for path in paths:
            started = time.perf_counter()
            get = session.get if kept_alive else requests.get
            get(stack.api_url + path, timeout=60).raise_for_status()
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def _send(stack: RunningStack, recipients: int) -> float:
    data = [
        ("from", f"News <news@{DOMAIN}>"),
        ("subject", "Hello"),
        ("html", "<html><body><p>Hi %recipient.name%</p></body></html>"),
        ("o:tag", "bench"),
        *[("to", f"reader{n}@example.net") for n in range(recipients)],
    ]
    started = time.perf_counter()
    response = stack.call("POST", f"/v3/{DOMAIN}/messages", data=data)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed


def _total(stack: RunningStack, event: str) -> int:
    stats = stack.call("GET", f"/v3/{DOMAIN}/stats/total", params={"event": event}).json()["stats"]
    return sum(int(s[event]["total"]) for s in stats)


def _opened(stack: RunningStack) -> int:
    return _total(stack, "opened")


def _items(stack: RunningStack) -> int:
    """Items in the table: what the local stack's memory holds by design (moto keeps them in memory)."""
    pages = (
        stack.client("dynamodb")
        .get_paginator("scan")
        .paginate(TableName=stack.resource("DataTable"), Select="COUNT")
    )
    return sum(page["Count"] for page in pages)


def _pixel_paths(stack: RunningStack) -> list[str]:
    s3, bucket = stack.client("s3"), stack.resource("MessageBucket")
    paths = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for listed in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=listed["Key"])["Body"].read()
            paths += [match.decode() for match in _PIXEL.findall(body)]
    return paths


def run(*, tiny: bool) -> dict:
    recipients = 50 if tiny else 1000
    opens = 200 if tiny else 10_000
    with tempfile.TemporaryDirectory(prefix="bench-local-stack-") as state:
        stack = start_stack(Path(state))
        try:
            return _measure(stack, recipients, opens, tiny=tiny)
        finally:
            stack.stop()


def _measure(stack: RunningStack, recipients: int, opens: int, *, tiny: bool) -> dict:
    assert stack.process is not None
    pid = stack.process.pid
    stack.create_tracked_domain(DOMAIN)
    single = _send(stack, 1)
    before = _resident_mb(pid)
    many = _send(stack, recipients)
    after = _resident_mb(pid)
    paths = _pixel_paths(stack)
    deadline = time.monotonic() + (60 if tiny else 600)
    # The consumer first counts the acceptances (one stream record per copy): opens are timed after that.
    while _total(stack, "accepted") < recipients + 1 and time.monotonic() < deadline:
        time.sleep(0.2)

    before_latency, sample = _opened(stack), paths[:200]
    kept_alive, new_each = _one_reader(stack, sample, kept_alive=True), _one_reader(stack, sample)
    # These opens are all counted before the timed ones start, so that none of them is counted with those.
    while _opened(stack) < before_latency + 2 * len(sample) and time.monotonic() < deadline:
        time.sleep(0.2)
    session = requests.Session()
    base_opened, items_before, memory_before = _opened(stack), _items(stack), _resident_mb(pid)
    per_thousand: list[float] = []
    started = time.perf_counter()
    sent = 0
    with ThreadPoolExecutor(READERS) as pool:
        while sent < opens:
            batch = [paths[(sent + n) % len(paths)] for n in range(min(1000, opens - sent))]
            statuses = set(pool.map(lambda p: session.get(stack.api_url + p, timeout=60).status_code, batch))
            assert statuses == {200}, statuses
            sent += len(batch)
            per_thousand.append(_resident_mb(pid))
    raw_seconds = time.perf_counter() - started
    while _opened(stack) - base_opened < opens and time.monotonic() < deadline + raw_seconds:
        time.sleep(0.2)
    end_to_end_seconds = time.perf_counter() - started
    recorded = _opened(stack) - base_opened
    items_added, memory_added = _items(stack) - items_before, _resident_mb(pid) - memory_before
    per_item_kb = memory_added * 1024 / max(items_added, 1)

    raw_rate, end_to_end_rate = opens / raw_seconds, recorded / end_to_end_seconds
    first = per_thousand[0] - after if per_thousand else 0.0
    last = per_thousand[-1] - per_thousand[-2] if len(per_thousand) > 1 else first
    end = per_thousand[-1] if per_thousand else after
    rows = [
        row(
            CASE,
            f"one message to {recipients:,} recipients: time per recipient (baseline: a 1-recipient message)",
            many / recipients * 1000,
            "ms",
            baseline=single * 1000,
            note=f"{many:.1f} s in all",
        ),
        row(
            CASE,
            f"one message to {recipients:,} recipients: resident memory per recipient",
            (after - before) * 1024 / recipients,
            "KB",
            note=f"{after:.0f} MB after (the stack and moto)",
        ),
        row(
            CASE,
            "one reader on one kept-alive connection: ms per pixel load (baseline: a new connection each)",
            kept_alive * 1000,
            "ms",
            baseline=new_each * 1000,
            note=f"median of {len(sample)} loads",
        ),
        row(
            CASE,
            f"{opens:,} pixel loads, {READERS} readers: opened events/s end to end (baseline: raw opens/s)",
            end_to_end_rate,
            "/s",
            baseline=raw_rate,
            target=f">= {END_TO_END_TARGET:.0f}/s",
            met=end_to_end_rate >= END_TO_END_TARGET and recorded == opens,
            note=f"{recorded:,} of {opens:,} recorded",
        ),
        row(
            CASE,
            "resident memory added by the last 1,000 opens",
            last,
            "MB",
            note=f"the first 1,000: {first:.1f} MB; {end:.0f} MB in all; the opens stored {items_added:,} "
            f"items (raw opens, events): {per_item_kb:.1f} KB of memory each",
        ),
    ]
    raw = {
        "recipients": recipients,
        "seconds_one_recipient": single,
        "seconds_all_recipients": many,
        "seconds_per_load_kept_alive": kept_alive,
        "seconds_per_load_new_connection": new_each,
        "rss_mb_before_send": before,
        "rss_mb_after_send": after,
        "opens": opens,
        "opens_recorded": recorded,
        "items_stored_by_the_opens": items_added,
        "rss_mb_added_by_the_opens": memory_added,
        "raw_opens_per_s": raw_rate,
        "opened_events_per_s": end_to_end_rate,
        "rss_mb_per_1000_opens": per_thousand,
    }
    return {"rows": rows, "raw": raw}
