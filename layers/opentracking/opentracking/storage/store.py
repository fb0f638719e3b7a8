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

import json
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from opentracking.core.aws import client
from opentracking.core.errors import StorageUnavailable
from opentracking.core.observability import logger

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()
_BATCH_SIZE = 25
_TRANSACTION_SIZE = 100
_MAX_BATCH_ROUNDS = 8
_S3_WORKERS = 16
AWS_ERRORS = (BotoCoreError, ClientError)


def serialize(item: dict[str, Any]) -> dict[str, Any]:
    return {key: _serializer.serialize(value) for key, value in item.items() if value is not None}


def deserialize(item: dict[str, Any]) -> dict[str, Any]:
    return {key: _deserializer.deserialize(value) for key, value in item.items()}


def get_item(table: str, key: dict[str, Any]) -> dict[str, Any] | None:
    try:
        response = client("dynamodb").get_item(TableName=table, Key=serialize(key), ConsistentRead=True)
    except AWS_ERRORS as exc:
        raise StorageUnavailable("The data store is unavailable, please retry") from exc
    item = response.get("Item")
    return deserialize(item) if item else None


def put_item(table: str, item: dict[str, Any], *, condition: str | None = None) -> None:
    """Put one item; a failed condition raises ClientError(ConditionalCheckFailedException) for the caller."""
    kwargs = {"ConditionExpression": condition} if condition else {}
    try:
        client("dynamodb").put_item(TableName=table, Item=serialize(item), **kwargs)
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
            raise
        raise StorageUnavailable("The data store is unavailable, please retry") from exc
    except BotoCoreError as exc:
        raise StorageUnavailable("The data store is unavailable, please retry") from exc


def delete_item(table: str, key: dict[str, Any]) -> None:
    try:
        client("dynamodb").delete_item(TableName=table, Key=serialize(key))
    except AWS_ERRORS as exc:
        raise StorageUnavailable("The data store is unavailable, please retry") from exc


def query_index(table: str, index: str, key_name: str, key_value: str) -> list[dict[str, Any]]:
    """Every item of one index partition (paginated)."""
    return _query_all(
        TableName=table,
        IndexName=index,
        KeyConditionExpression="#k = :v",
        ExpressionAttributeNames={"#k": key_name},
        ExpressionAttributeValues={":v": {"S": key_value}},
    )


def query_prefix(table: str, pk: str, sk_prefix: str, *, consistent: bool = False) -> list[dict[str, Any]]:
    """Every item of one partition whose sort key starts with a prefix ("" for all), paginated."""
    condition, values = "pk = :pk", {":pk": {"S": pk}}
    if sk_prefix:
        condition += " AND begins_with(sk, :prefix)"
        values[":prefix"] = {"S": sk_prefix}
    return _query_all(
        TableName=table,
        KeyConditionExpression=condition,
        ExpressionAttributeValues=values,
        ConsistentRead=consistent,
    )


def _query_all(**query: Any) -> list[dict[str, Any]]:
    """Every item a Query finds, page after page, as plain values."""
    items: list[dict[str, Any]] = []
    try:
        for page in client("dynamodb").get_paginator("query").paginate(**query):
            items.extend(deserialize(item) for item in page["Items"])
    except AWS_ERRORS as exc:
        raise StorageUnavailable("The data store is unavailable, please retry") from exc
    return items


def put_json(bucket: str, key: str, document: object) -> None:
    client("s3").put_object(
        Bucket=bucket,
        Key=key,
        Body=json.dumps(document, default=str).encode(),
        ContentType="application/json",
    )


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

    def __init__(self, written: list[Any]):
        super().__init__(f"{len(written)} writes succeeded before the failure")
        self.written = written


def delete_objects(bucket: str, keys: list[str]) -> None:
    s3 = client("s3")
    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key} for key in chunk], "Quiet": True})


def batch_delete(table: str, keys: list[dict[str, Any]]) -> None:
    ddb = client("dynamodb")
    for start in range(0, len(keys), _BATCH_SIZE):
        requests = [{"DeleteRequest": {"Key": serialize(key)}} for key in keys[start : start + _BATCH_SIZE]]
        _write_batch(ddb, table, requests)


def _write_batch(ddb: Any, table: str, requests: list[dict[str, Any]]) -> None:
    pending = {table: requests}
    for attempt in range(_MAX_BATCH_ROUNDS):
        response = ddb.batch_write_item(RequestItems=pending)
        pending = response.get("UnprocessedItems") or {}
        if not pending:
            return
        time.sleep(min(0.05 * 2**attempt, 1.0))
    raise StorageUnavailable("DynamoDB kept throttling the write, please retry")


def transact_put(table: str, items: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Write items in TransactWriteItems chunks of 100 (each chunk all-or-nothing), in order, every
    item conditional on not existing yet. Returns the chunks written; on failure the exception carries
    them in `PartialWrite.written` so the caller can roll them back."""
    ddb = client("dynamodb")
    written: list[list[dict[str, Any]]] = []
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


def batch_put(table: str, items: list[dict[str, Any]]) -> None:
    """Put items in BatchWriteItem chunks of 25 (unconditional, so a retry rewrites the same items)."""
    ddb = client("dynamodb")
    try:
        for start in range(0, len(items), _BATCH_SIZE):
            requests = [
                {"PutRequest": {"Item": serialize(item)}} for item in items[start : start + _BATCH_SIZE]
            ]
            _write_batch(ddb, table, requests)
    except AWS_ERRORS as exc:
        raise StorageUnavailable("The data store is unavailable, please retry") from exc


def batch_get(table: str, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The items that exist among `keys` (BatchGetItem in chunks of 100, unprocessed keys retried)."""
    ddb = client("dynamodb")
    found: list[dict[str, Any]] = []
    try:
        for start in range(0, len(keys), 100):
            pending = {
                table: {"Keys": [serialize(key) for key in keys[start : start + 100]], "ConsistentRead": True}
            }
            for attempt in range(_MAX_BATCH_ROUNDS):
                response = ddb.batch_get_item(RequestItems=pending)
                found.extend(deserialize(item) for item in response.get("Responses", {}).get(table, []))
                pending = response.get("UnprocessedKeys") or {}
                if not pending:
                    break
                time.sleep(min(0.05 * 2**attempt, 1.0))
            else:
                raise StorageUnavailable("DynamoDB kept throttling the read, please retry")
    except AWS_ERRORS as exc:
        raise StorageUnavailable("The data store is unavailable, please retry") from exc
    return found
