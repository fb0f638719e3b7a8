"""The only DynamoDB and S3 adapter: every call to either goes through here (tests/unit/test_layer_shape.py
holds the rest of the layer to that), and every AWS error becomes a domain exception here, except where a
caller needs the condition that failed (a conditional put, a cancelled transaction).

The table's keys are in `storage.keys`, its records in `storage.records`. Copies are stored in S3 under
`messages/{domain}/{yyyy}/{mm}/{dd}/{submission}/{copy_id}.eml`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
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


def count_partition(table: str, pk: str) -> int:
    """How many items one partition holds (Query with Select=COUNT, paginated: nothing is returned, though
    DynamoDB still reads, and bills, every item it counts)."""
    total = 0
    try:
        pages = (
            client("dynamodb")
            .get_paginator("query")
            .paginate(
                TableName=table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": pk}},
                Select="COUNT",
            )
        )
        for page in pages:
            total += int(page["Count"])
    except AWS_ERRORS as exc:
        raise StorageUnavailable("The data store is unavailable, please retry") from exc
    return total


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
    """Delete objects and make sure each one went (DeleteObjects reports failures per key, not as an
    error). Deleting an object that is already gone succeeds, so a retry is harmless."""
    s3 = client("s3")
    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        try:
            response = s3.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": key} for key in chunk], "Quiet": True}
            )
        except AWS_ERRORS as exc:
            raise StorageUnavailable("The stored copy could not be deleted, please retry") from exc
        if response.get("Errors"):
            raise StorageUnavailable("The stored copy could not be deleted, please retry")


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
    ddb = client("dynamodb", "bulk")
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


def update_if_exists(table: str, key: dict[str, Any], values: dict[str, Any]) -> bool:
    """SET the given attributes on an item only if it exists; False when it does not (an erasure or an
    earlier call removed it)."""
    return update_if(table, key, values, condition="attribute_exists(pk)", condition_values={})


def update_if(
    table: str,
    key: dict[str, Any],
    values: dict[str, Any],
    *,
    condition: str,
    condition_values: dict[str, Any],
) -> bool:
    """SET attributes where `condition` holds (its placeholders `:name` given in `condition_values`);
    False when it does not."""
    return (
        update_returning(table, key, values, condition=condition, condition_values=condition_values)
        is not None
    )


def update_returning(
    table: str,
    key: dict[str, Any],
    values: dict[str, Any],
    *,
    condition: str,
    condition_values: dict[str, Any],
) -> dict[str, Any] | None:
    """`update_if` that also reads: the whole item as updated, or None when the condition did not hold."""
    names = {f"#a{i}": name for i, name in enumerate(values)}
    placeholders = {f":v{i}": _serializer.serialize(v) for i, v in enumerate(values.values())}
    placeholders.update({name: _serializer.serialize(v) for name, v in condition_values.items()})
    try:
        response = client("dynamodb").update_item(
            TableName=table,
            Key=serialize(key),
            UpdateExpression="SET " + ", ".join(f"#a{i} = :v{i}" for i in range(len(values))),
            ConditionExpression=condition,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=placeholders,
            ReturnValues="ALL_NEW",
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
            return None
        raise StorageUnavailable("The data store is unavailable, please retry") from exc
    except BotoCoreError as exc:
        raise StorageUnavailable("The data store is unavailable, please retry") from exc
    return deserialize(response.get("Attributes") or {})


def query_page(table: str, pk: str, *, after: str | None, limit: int) -> list[dict[str, Any]]:
    """One page of a partition in sort-key order: at most `limit` items whose sort key follows `after`."""
    condition, values = "pk = :pk", {":pk": {"S": pk}}
    if after:
        condition += " AND sk > :after"
        values[":after"] = {"S": after}
    try:
        response = client("dynamodb").query(
            TableName=table, KeyConditionExpression=condition, ExpressionAttributeValues=values, Limit=limit
        )
    except AWS_ERRORS as exc:
        raise StorageUnavailable("The data store is unavailable, please retry") from exc
    return [deserialize(item) for item in response["Items"]]


def query_window(
    table: str,
    pk: str,
    *,
    limit: int,
    after: str | None = None,
    before: str | None = None,
    descending: bool = False,
    prefix_of: tuple[str, str] | None = None,
    max_pages: int = 20,
) -> list[dict[str, Any]]:
    """Up to `limit` items of a partition in sort-key order (`descending`: from the end), with sort keys
    after `after` / before `before`; with `prefix_of` (attribute, prefix), only items whose attribute
    starts with the prefix (a filter: pages are read on until enough match, at most `max_pages`)."""
    condition, values = "pk = :pk", {":pk": {"S": pk}}
    if after:
        condition += " AND sk > :after"
        values[":after"] = {"S": after}
    elif before:
        condition += " AND sk < :before"
        values[":before"] = {"S": before}
    query: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": condition,
        "ScanIndexForward": not descending,
        "Limit": limit,
    }
    if prefix_of:
        query["FilterExpression"] = "begins_with(#f, :prefix)"
        query["ExpressionAttributeNames"] = {"#f": prefix_of[0]}
        values[":prefix"] = {"S": prefix_of[1]}
    query["ExpressionAttributeValues"] = values
    found: list[dict[str, Any]] = []
    try:
        for _ in range(max_pages):
            response = client("dynamodb").query(**query)
            found.extend(deserialize(item) for item in response["Items"])
            if len(found) >= limit or "LastEvaluatedKey" not in response:
                break
            query["ExclusiveStartKey"] = response["LastEvaluatedKey"]
    except AWS_ERRORS as exc:
        raise StorageUnavailable("The data store is unavailable, please retry") from exc
    return found[:limit]


def query_range(table: str, pk: str, lo: str, hi: str) -> list[dict[str, Any]]:
    """Every item of one partition whose sort key is between lo and hi (inclusive), paginated."""
    return _query_all(
        TableName=table,
        KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
        ExpressionAttributeValues={":pk": {"S": pk}, ":lo": {"S": lo}, ":hi": {"S": hi}},
    )


def index_partition_keys(table: str, index: str, key_name: str, key_value: str, limit: int) -> list[str]:
    """Up to `limit` distinct table partition keys listed under one index key (a keys-only index)."""
    request: dict[str, Any] = {
        "TableName": table,
        "IndexName": index,
        "KeyConditionExpression": "#k = :v",
        "ExpressionAttributeNames": {"#k": key_name},
        "ExpressionAttributeValues": {":v": {"S": key_value}},
    }
    found: list[str] = []
    try:
        while len(found) < limit:
            response = client("dynamodb").query(**request)
            for item in response["Items"]:
                if item["pk"]["S"] not in found:
                    found.append(item["pk"]["S"])
            if "LastEvaluatedKey" not in response:
                break
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]
    except AWS_ERRORS as exc:
        raise StorageUnavailable("The data store is unavailable, please retry") from exc
    return found[:limit]


def count_index_between(
    table: str,
    index: str,
    pk: tuple[str, str],
    sk: tuple[str, str, str],
    *,
    keep: Callable[[dict[str, Any]], bool],
    max_items: int,
    max_pages: int,
) -> int | None:
    """How many items of one index partition between two sort keys `keep` keeps; None when more than
    `max_items` match or the range holds more than `max_pages` pages (no count rather than a wrong one)."""
    request: dict[str, Any] = {
        "TableName": table,
        "IndexName": index,
        "KeyConditionExpression": "#pk = :pk AND #sk BETWEEN :lo AND :hi",
        "ExpressionAttributeNames": {"#pk": pk[0], "#sk": sk[0]},
        "ExpressionAttributeValues": {":pk": {"S": pk[1]}, ":lo": {"S": sk[1]}, ":hi": {"S": sk[2]}},
    }
    total = 0
    try:
        for _ in range(max_pages):
            response = client("dynamodb").query(**request)
            total += sum(1 for item in map(deserialize, response["Items"]) if keep(item))
            if total > max_items:
                return None
            last = response.get("LastEvaluatedKey")
            if not last:
                return total
            request["ExclusiveStartKey"] = last
    except AWS_ERRORS as exc:
        raise StorageUnavailable("The data store is unavailable, please retry") from exc
    return None


def query_index_between(
    table: str,
    index: str,
    pk: tuple[str, str],
    sk: tuple[str, str, str],
    *,
    forward: bool,
    wanted: int,
    keep: Callable[[dict[str, Any]], bool] | None,
    skip_sk: str | None,
    max_pages: int,
) -> list[dict[str, Any]]:
    """Up to `wanted` items of one index partition whose sort key is between two values (pk: (name,
    value); sk: (name, lo, hi)), in order, that `keep` keeps (a filter DynamoDB's expressions cannot say,
    such as Mailgun's OR, NOT and phrases; it costs the same reads as a FilterExpression). An item whose
    sort key is `skip_sk` (the last one a previous page showed) is left out. At most `max_pages` pages
    are read, so a filter that matches little cannot make one request read the whole partition."""
    names = {"#pk": pk[0], "#sk": sk[0]}
    values = {":pk": {"S": pk[1]}, ":lo": {"S": sk[1]}, ":hi": {"S": sk[2]}}
    request: dict[str, Any] = {
        "TableName": table,
        "IndexName": index,
        "KeyConditionExpression": "#pk = :pk AND #sk BETWEEN :lo AND :hi",
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
        "ScanIndexForward": forward,
        "Limit": wanted + 1,
    }
    found: list[dict[str, Any]] = []
    try:
        for _ in range(max_pages):
            response = client("dynamodb").query(**request)
            found += [
                item
                for item in map(deserialize, response["Items"])
                if item[sk[0]] != skip_sk and (keep is None or keep(item))
            ]
            last = response.get("LastEvaluatedKey")
            if len(found) >= wanted or not last:
                break
            request["ExclusiveStartKey"] = last
    except AWS_ERRORS as exc:
        raise StorageUnavailable("The data store is unavailable, please retry") from exc
    return found[:wanted]


class ObjectMissing(Exception):
    """The object is not there (expired by the bucket's lifecycle rule, or removed)."""


def get_object(bucket: str, key: str) -> bytes:
    """The object's bytes; ObjectMissing when it does not exist, StorageUnavailable when S3 fails."""
    try:
        body: bytes = client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            raise ObjectMissing(key) from exc
        raise StorageUnavailable("The stored copy could not be read, please retry") from exc
    except AWS_ERRORS as exc:
        raise StorageUnavailable("The stored copy could not be read, please retry") from exc
    return body


# --- transactions ----------------------------------------------------------------------------------
# The read side writes each derived fact (an event, a unique marker, counters) in one transaction with
# its conditions; these build the transaction's operations and run it.


class TransactionCancelled(Exception):
    """A transaction was cancelled: `reasons` holds each operation's code ("None" where it was fine,
    "ConditionalCheckFailed" where its condition failed), empty for a conflict with another writer."""

    def __init__(self, reasons: list[str]):
        super().__init__(f"transaction cancelled: {reasons}")
        self.reasons = reasons


def put_operation(
    table: str,
    item: dict[str, Any],
    *,
    if_absent: bool = False,
    condition: str | None = None,
    condition_values: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A transaction's Put; with `if_absent`, cancelled if the item exists (a replay writes nothing twice),
    with `condition` (its placeholders `:name` in `condition_values`), cancelled where it does not hold."""
    put: dict[str, Any] = {"TableName": table, "Item": serialize(item)}
    if if_absent:
        put["ConditionExpression"] = "attribute_not_exists(pk)"
    elif condition:
        put["ConditionExpression"] = condition
        if condition_values:
            put["ExpressionAttributeValues"] = serialize(condition_values)
    return {"Put": put}


def check_operation(table: str, key: dict[str, Any], condition: str) -> dict[str, Any]:
    """A transaction's ConditionCheck on another item."""
    return {"ConditionCheck": {"TableName": table, "Key": serialize(key), "ConditionExpression": condition}}


def update_operation(
    table: str,
    key: dict[str, Any],
    *,
    add: dict[str, Any] | None = None,
    set_always: dict[str, Any] | None = None,
    set_once: dict[str, Any] | None = None,
    remove: tuple[str, ...] = (),
    condition: str | None = None,
    condition_values: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A transaction's Update: ADD to counters (created at zero) or string sets, SET attributes, SET others
    only where they are not set yet (a counter's expiry, a tag's first use), REMOVE attributes; with
    `condition` (attribute names as they are, values as `:name` placeholders in `condition_values`), only
    where it holds."""
    names: dict[str, str] = {}
    values: dict[str, Any] = {}

    def placeholder(name: str, value: Any) -> tuple[str, str]:
        index = len(names)
        names[f"#a{index}"], values[f":v{index}"] = name, _serializer.serialize(value)
        return f"#a{index}", f":v{index}"

    adds = [" ".join(placeholder(name, n)) for name, n in (add or {}).items()]
    sets = ["{} = {}".format(*placeholder(name, v)) for name, v in (set_always or {}).items()]
    sets += [
        "{0} = if_not_exists({0}, {1})".format(*placeholder(name, v)) for name, v in (set_once or {}).items()
    ]
    removes = []
    for name in remove:  # REMOVE names an attribute, with no value
        removes.append(f"#a{len(names)}")
        names[removes[-1]] = name
    expression = " ".join(
        part
        for part in (
            "ADD " + ", ".join(adds) if adds else "",
            "SET " + ", ".join(sets) if sets else "",
            "REMOVE " + ", ".join(removes) if removes else "",
        )
        if part
    )
    values.update({name: _serializer.serialize(v) for name, v in (condition_values or {}).items()})
    update = {
        "TableName": table,
        "Key": serialize(key),
        "UpdateExpression": expression,
        "ExpressionAttributeNames": names,
    }
    if values:
        update["ExpressionAttributeValues"] = values
    if condition:
        update["ConditionExpression"] = condition
    return {"Update": update}


def transact_write(operations: list[dict[str, Any]]) -> None:
    """Run one transaction. TransactionCancelled when a condition failed or another writer conflicted;
    any other failure is left to the caller's retry (the stream redelivers the batch)."""
    try:
        client("dynamodb").transact_write_items(TransactItems=operations)
    except ClientError as exc:
        code = exc.response["Error"]["Code"]
        if code == "TransactionCanceledException":
            reasons = [
                reason.get("Code") or "None" for reason in exc.response.get("CancellationReasons") or []
            ]
            raise TransactionCancelled(reasons) from exc
        if code == "TransactionConflictException":
            raise TransactionCancelled([]) from exc
        raise
