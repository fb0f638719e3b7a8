"""The template's non-HTTP triggers, driven as AWS drives them: schedules at their rate (and on demand),
DynamoDB streams and SQS queues polled, with partial batch failures honoured (ReportBatchItemFailures)."""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import boto3

from devstack.runtime import Function
from devstack.streams import jsonable, shard_iterators
from devstack.template import Stack

_RATE = re.compile(r"rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
Logger = Callable[[str], None]


def rate_seconds(expression: str) -> float:
    found = _RATE.fullmatch(expression.strip())
    if not found:
        raise ValueError(f"only rate(...) schedules run locally, not {expression!r}")
    return int(found.group(1)) * _UNIT_SECONDS[found.group(2).rstrip("s")]


def scheduled_event(rule_arn: str) -> dict:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "us-east-1",
        "resources": [rule_arn],
        "detail": {},
    }


@dataclass
class Schedule:
    function: Function
    name: str
    interval: float
    enabled: bool = True

    @property
    def rule_arn(self) -> str:
        return f"arn:aws:events:us-east-1:123456789012:rule/{self.function.logical_id}-{self.name}"

    def fire(self) -> object:
        return self.function.invoke(scheduled_event(self.rule_arn))


def matches(pattern: object, value: object) -> bool:
    """Lambda event filtering for the pattern subset templates use: nested keys, lists of exact values."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            k in value and matches(p, value[k]) for k, p in pattern.items()
        )
    if isinstance(pattern, list):
        return value in pattern
    return pattern == value


def record_filter(props: dict) -> Callable[[dict], bool]:
    patterns = [json.loads(f["Pattern"]) for f in (props.get("FilterCriteria") or {}).get("Filters", [])]
    return lambda record: not patterns or any(matches(p, record) for p in patterns)


_SEEN_EVENT_IDS = 5000
QUEUE_YIELD_SECONDS = float(os.environ.get("LOCAL_QUEUE_YIELD_SECONDS") or 1.0)
_REWIND = 500  # records: more than one cancelled transaction can add (100 items) and take back


def _live_iterator(streams, stream_arn: str, shard_id: str, sequence: str, event_id: str) -> str:
    """An iterator just after the last record read, on the table's live stream.

    moto puts back a deep copy of the table, stream included, when a transaction is cancelled: an old
    iterator keeps reading the discarded copy, and the records the cancelled transaction wrote are gone
    from the live stream, their sequence numbers handed out again. So once caught up, look the last
    record read up on the live stream: still there, go on after it; gone, rewind a little and let the
    event ids already seen skip the records that were delivered before."""

    def iterator(kind: str, number: str) -> str:
        return streams.get_shard_iterator(
            StreamArn=stream_arn, ShardId=shard_id, ShardIteratorType=kind, SequenceNumber=number
        )["ShardIterator"]

    response = streams.get_records(ShardIterator=iterator("AT_SEQUENCE_NUMBER", sequence), Limit=1)
    found = response.get("Records", [])
    if found and found[0]["eventID"] == event_id:
        return response["NextShardIterator"]
    shard = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]
    start = int(
        next(s for s in shard if s["ShardId"] == shard_id)["SequenceNumberRange"]["StartingSequenceNumber"]
    )
    return iterator("AT_SEQUENCE_NUMBER", str(max(start, int(sequence) - _REWIND)))


def _failed_ids(response: object) -> set[str]:
    if isinstance(response, dict):
        return {str(f.get("itemIdentifier")) for f in response.get("batchItemFailures") or []}
    return set()


class Triggers:
    """Background pollers for every non-HTTP event source of the template."""

    def __init__(
        self,
        stack: Stack,
        functions: dict[str, Function],
        log: Logger,
        poll_interval: float = 0.5,
        schedule_seconds: float | None = None,
        api_busy: Callable[[], bool] = lambda: False,
    ):
        """`schedule_seconds` replaces every schedule's rate (demos and tests cannot wait minutes).
        `api_busy` says whether the API is answering a request: queue consumers then wait for it (see
        `_yield_to_api`)."""
        self.stack, self.functions, self.log, self.poll_interval = stack, functions, log, poll_interval
        self.api_busy = api_busy
        self.schedules: dict[str, Schedule] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sources: list[tuple[str, Function, dict]] = []
        for logical_id, resource in stack.functions().items():
            for name, event in resource.get("Properties", {}).get("Events", {}).items():
                kind, props = event.get("Type"), event.get("Properties", {})
                if kind in ("Schedule", "ScheduleV2"):
                    expression = stack.resolve(props.get("Schedule") or props.get("ScheduleExpression"))
                    enabled = props.get("Enabled", True) and props.get("State", "ENABLED") != "DISABLED"
                    interval = schedule_seconds or rate_seconds(expression)
                    self.schedules[logical_id] = Schedule(
                        functions[logical_id], name, interval, enabled=bool(enabled)
                    )
                elif kind in ("DynamoDB", "SQS"):
                    self._sources.append((kind, functions[logical_id], props))

    def start(self) -> None:
        for schedule in self.schedules.values():
            if schedule.enabled:
                self._spawn(self._run_schedule, schedule)
        for kind, function, props in self._sources:
            self._spawn(self._poll_stream if kind == "DynamoDB" else self._poll_queue, function, props)

    def stop(self, deadline: float | None = None) -> None:
        """Stop every poller and schedule; wait for them until `deadline` (time.monotonic()) at most. A batch
        still running then is abandoned with the process: its records were never checkpointed, as with a
        Lambda function stopped mid-batch."""
        self._stop.set()
        deadline = time.monotonic() + 5 if deadline is None else deadline
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def _spawn(self, target: Callable, *args: object) -> None:
        thread = threading.Thread(target=self._guard, args=(target, *args), daemon=True)
        thread.start()
        self._threads.append(thread)

    def _guard(self, target: Callable, *args: object) -> None:
        while not self._stop.is_set():
            try:
                target(*args)
                return
            except Exception as exc:  # a poller must survive a failing handler or a moto hiccup
                self.log(f"trigger error ({type(exc).__name__}: {exc}); retrying")
                self._stop.wait(1.0)

    def _run_schedule(self, schedule: Schedule) -> None:
        while not self._stop.wait(schedule.interval):
            schedule.fire()

    def _poll_stream(self, function: Function, props: dict) -> None:
        streams = boto3.client("dynamodbstreams")
        stream_arn = self.stack.resolve(props["Stream"])
        batch_size = int(props.get("BatchSize", 100))
        iterators = shard_iterators(streams, stream_arn, props.get("StartingPosition", "TRIM_HORIZON"))
        wanted = record_filter(props)
        pending: list[dict] = []
        last: dict[str, tuple[str, str]] = {}  # shard -> (sequence number, event id) of the last record read
        seen: deque[str] = deque(maxlen=_SEEN_EVENT_IDS)
        while not self._stop.is_set():
            caught_up = drained = True
            for shard_id, iterator in list(iterators.items()):
                if len(pending) < batch_size:
                    limit = batch_size - len(pending)
                    response = streams.get_records(ShardIterator=iterator, Limit=limit)
                    iterators[shard_id] = response.get("NextShardIterator") or iterator
                    records = response.get("Records", [])
                    caught_up = caught_up and not records
                    drained = drained and len(records) < limit
                    for record in records:
                        last[shard_id] = (record["dynamodb"]["SequenceNumber"], record["eventID"])
                        if record["eventID"] in seen:
                            continue  # read again after a re-anchor (below)
                        seen.append(record["eventID"])
                        record.setdefault("eventSourceARN", stream_arn)
                        if wanted(record):
                            pending.append(record)
                    if not records and shard_id in last:
                        iterators[shard_id] = _live_iterator(streams, stream_arn, shard_id, *last[shard_id])
            if pending and not drained and len(pending) < batch_size:
                continue  # as Lambda, fill the batch from what the stream already holds before invoking
            if pending:
                batch, pending = pending[:batch_size], pending[batch_size:]
                failed = _failed_ids(function.invoke({"Records": jsonable(batch)}))
                # Like Lambda: a partial failure re-delivers from the first failed record on.
                if failed:
                    first = next(i for i, r in enumerate(batch) if r["dynamodb"]["SequenceNumber"] in failed)
                    pending = batch[first:] + pending
                    self._stop.wait(self.poll_interval)
            elif caught_up:
                # Only an empty read waits: records the filter dropped (the consumer's own writes, most of
                # the stream under load) are no reason to, and waiting on them capped the read side.
                self._stop.wait(self.poll_interval)

    def _yield_to_api(self) -> None:
        """Wait, at most QUEUE_YIELD_SECONDS, while the API is answering a request. On AWS a queue's consumer
        runs in containers of its own; here every function shares one interpreter, and the sender working
        through a 1,000-recipient send made the next submission take several times as long. Bounded, so a
        busy API slows the queues down without stopping them."""
        deadline = time.monotonic() + QUEUE_YIELD_SECONDS
        while self.api_busy() and time.monotonic() < deadline and not self._stop.is_set():
            time.sleep(0.01)

    def _poll_queue(self, function: Function, props: dict) -> None:
        sqs = boto3.client("sqs")
        queue_arn = self.stack.resolve(props["Queue"])
        queue_url = sqs.get_queue_url(QueueName=queue_arn.rsplit(":", 1)[1])["QueueUrl"]
        batch_size = min(int(props.get("BatchSize", 10)), 10)
        while not self._stop.is_set():
            self._yield_to_api()
            messages = sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=batch_size,
                WaitTimeSeconds=1,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not messages:
                continue
            records = [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": m.get("Attributes", {}),
                    "messageAttributes": m.get("MessageAttributes", {}),
                    "md5OfBody": m.get("MD5OfBody"),
                    "eventSource": "aws:sqs",
                    "eventSourceARN": queue_arn,
                    "awsRegion": self.stack.region,
                }
                for m in messages
            ]
            failed = _failed_ids(function.invoke({"Records": records}))
            done = [m for m in messages if m["MessageId"] not in failed]
            if done:
                sqs.delete_message_batch(
                    QueueUrl=queue_url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
                )
