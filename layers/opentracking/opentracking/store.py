"""DynamoDB and S3 adapters. Every AWS error is turned into a domain exception here.

Table layout (one table, `pk`/`sk`, plus `gsi1` for listings):

    domain          DOMAIN#{domain}     DOMAIN
    message         MSG#{submission}    MESSAGE                         gsi1: MSGID#{domain}#{message-id}
    copy            COPY#{copy_id}      COPY
    accepted event  COPY#{copy_id}      EVENT#{ts}#accepted#{event_id}  gsi1: EVENTS#{domain} / {ts}#{id}
    raw open        COPY#{copy_id}      OPEN#{ts_ms}#{request_id}       (joined and indexed downstream)
    idempotency     IDEMPOTENCY#submit  {hash of the Idempotency-Key}

Copies are stored in S3 under `messages/{domain}/{yyyy}/{mm}/{dd}/{submission}/{copy_id}.eml`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from boto3.dynamodb.types import TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from opentracking.aws import client
from opentracking.errors import NotFound, StorageUnavailable
from opentracking.observability import logger

_serializer = TypeSerializer()
_BATCH_SIZE = 25
_TRANSACTION_SIZE = 100
_MAX_BATCH_ROUNDS = 8
_S3_WORKERS = 16
AWS_ERRORS = (BotoCoreError, ClientError)


def domain_key(domain: str) -> dict:
    return {"pk": {"S": f"DOMAIN#{domain}"}, "sk": {"S": "DOMAIN"}}


def serialize(item: dict) -> dict:
    return {key: _serializer.serialize(value) for key, value in item.items() if value is not None}


@dataclass(frozen=True)
class DomainSettings:
    name: str
    web_prefix: str
    open_tracking: bool
    place_at_the_top: bool

    @property
    def tracking_host(self) -> str:
        return f"{self.web_prefix}.{self.name}"


def get_domain(table: str, domain: str) -> DomainSettings:
    try:
        response = client("dynamodb").get_item(TableName=table, Key=domain_key(domain), ConsistentRead=True)
    except AWS_ERRORS as exc:
        raise StorageUnavailable("The domain store is unavailable, please retry") from exc
    item = response.get("Item")
    if not item:
        raise NotFound(f"Domain not found: {domain}")
    return DomainSettings(
        name=domain,
        web_prefix=item.get("web_prefix", {}).get("S", "email"),
        open_tracking=item.get("open_tracking", {}).get("BOOL", False),
        place_at_the_top=item.get("place_at_the_top", {}).get("BOOL", False),
    )


def put_domain(
    table: str, domain: str, *, web_prefix: str = "email", open_tracking: bool = False, top: bool = False
) -> None:
    """Create or replace a domain's settings (the domains API builds on this)."""
    item = {
        "pk": f"DOMAIN#{domain}",
        "sk": "DOMAIN",
        "name": domain,
        "web_prefix": web_prefix,
        "open_tracking": open_tracking,
        "place_at_the_top": top,
        "created_at": int(time.time()),
    }
    client("dynamodb").put_item(TableName=table, Item=serialize(item))


def put_objects(bucket: str, objects: Iterable[tuple[str, bytes]]) -> list[str]:
    """Upload objects concurrently; return the keys written. On failure, the ones that were written are
    reported through the exception so the caller can roll them back."""
    objects = list(objects)
    s3 = client("s3")

    def put(key_and_body: tuple[str, bytes]) -> str:
        key, body = key_and_body
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="message/rfc822")
        return key

    written: list[str] = []
    failure: Exception | None = None
    with ThreadPoolExecutor(max_workers=min(_S3_WORKERS, max(1, len(objects)))) as pool:
        futures = [pool.submit(put, pair) for pair in objects]
        for future in futures:
            try:
                written.append(future.result())
            except AWS_ERRORS as exc:
                failure = exc
    if failure is not None:
        raise PartialWrite(written) from failure
    return written


class PartialWrite(Exception):
    """A multi-request write failed part-way; `written` is what had been written (to roll back)."""

    def __init__(self, written: list):
        super().__init__(f"{len(written)} writes succeeded before the failure")
        self.written = written


def delete_objects(bucket: str, keys: list[str]) -> None:
    s3 = client("s3")
    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key} for key in chunk], "Quiet": True})


def batch_delete(table: str, keys: list[dict]) -> None:
    ddb = client("dynamodb")
    for start in range(0, len(keys), _BATCH_SIZE):
        requests = [{"DeleteRequest": {"Key": serialize(key)}} for key in keys[start : start + _BATCH_SIZE]]
        _write_batch(ddb, table, requests)


def _write_batch(ddb, table: str, requests: list[dict]) -> None:
    pending = {table: requests}
    for attempt in range(_MAX_BATCH_ROUNDS):
        response = ddb.batch_write_item(RequestItems=pending)
        pending = response.get("UnprocessedItems") or {}
        if not pending:
            return
        time.sleep(min(0.05 * 2**attempt, 1.0))
    raise StorageUnavailable("DynamoDB kept throttling the write, please retry")


def transact_put(table: str, items: list[dict]) -> list[list[dict]]:
    """Write items in TransactWriteItems chunks of 100 (each chunk all-or-nothing), in order, every
    item conditional on not existing yet. Returns the chunks written; on failure the exception carries
    them in `PartialWrite.written` so the caller can roll them back."""
    ddb = client("dynamodb")
    written: list[list[dict]] = []
    for start in range(0, len(items), _TRANSACTION_SIZE):
        chunk = items[start : start + _TRANSACTION_SIZE]
        try:
            ddb.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": table,
                            "Item": serialize(item),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    }
                    for item in chunk
                ]
            )
        except AWS_ERRORS as exc:
            raise PartialWrite(written) from exc
        written.append(chunk)
    return written


def log_rollback_failure(what: str, exc: Exception) -> None:
    # No addresses or keys in logs: only what kind of cleanup failed.
    logger.error("rollback failed", extra={"what": what, "error": type(exc).__name__})
