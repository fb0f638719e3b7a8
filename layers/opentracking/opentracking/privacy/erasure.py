"""Per-recipient erasure: everything stored about one address in one domain goes.

For each copy addressed to the recipient (found through `gsi2`, `RCPT#{domain}#{sha256 of the address}`):
its S3 object, and every item of its partition `COPY#{copy_id}`: the copy record, the accepted and opened
events (and with them their `gsi1` index entries), the raw opens, the unique and counted markers; and
the webhook-delivered markers of its events. What is left is aggregate: hourly counters and tags keep
their numbers (an erasure does not rewrite history's totals, and they name no one), message records
name no recipient, and the tracking suppression list keeps the address so the opt-out goes on working.

Safe to retry and to race:
- the copy record is marked `erasing` first, so the events consumer writes nothing more for it (its
  transactions check the mark), and deleted last, so a call that fails half-way finds the copy again;
- one call erases at most MAX_COPIES_PER_CALL copies and answers `complete: false` when more remain,
  which bounds its time below the API's timeout; calling again carries on;
- erasing an address with nothing stored (or already erased) succeeds and erases nothing.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from opentracking.core.aws import client
from opentracking.core.config import settings
from opentracking.core.errors import BadRequest, StorageUnavailable
from opentracking.core.metric_names import Metric
from opentracking.core.observability import count, logger
from opentracking.http.forms import Form
from opentracking.mail import compose
from opentracking.privacy import suppressions
from opentracking.storage import store

MAX_COPIES_PER_CALL = 100
AWS_ERRORS = (BotoCoreError, ClientError)


def recipient_key(domain: str, address: str) -> str:
    return f"RCPT#{domain}#{suppressions.address_digest(address)}"


def _address(form: Form) -> str:
    values = form.all("address")
    if not any(value.strip() for value in values):
        raise BadRequest("'address' parameter is missing")
    addresses = compose.parse_recipients(values, "address")
    if len(addresses) != 1:
        raise BadRequest("Erase one 'address' per request")
    return addresses[0]


def _copy_keys(domain: str, address: str, limit: int) -> list[str]:
    """Up to `limit` copy partition keys of the recipient (the index holds keys only)."""
    request = {
        "TableName": settings().table_name,
        "IndexName": "gsi2",
        "KeyConditionExpression": "gsi2pk = :k",
        "ExpressionAttributeValues": {":k": {"S": recipient_key(domain, address)}},
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


def _mark_erasing(table: str, copy_pk: str) -> bool:
    """False when the copy record is already gone (an earlier call finished it)."""
    try:
        client("dynamodb").update_item(
            TableName=table,
            Key={"pk": {"S": copy_pk}, "sk": {"S": "COPY"}},
            UpdateExpression="SET erasing = :t",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":t": {"BOOL": True}},
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
            return False
        raise StorageUnavailable("The data store is unavailable, please retry") from exc
    except BotoCoreError as exc:
        raise StorageUnavailable("The data store is unavailable, please retry") from exc
    return True


def _delete_objects(bucket: str, keys: list[str]) -> None:
    """Delete objects and make sure each one went (DeleteObjects reports failures per key, not as an
    error). Deleting an object that is already gone succeeds, so a retry is harmless."""
    try:
        response = client("s3").delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True}
        )
    except AWS_ERRORS as exc:
        raise StorageUnavailable("The stored copy could not be deleted, please retry") from exc
    if response.get("Errors"):
        raise StorageUnavailable("The stored copy could not be deleted, please retry")


def _erase_copy(table: str, bucket: str, copy_pk: str) -> tuple[int, int]:
    """Erase one copy; returns (objects, items) removed."""
    if not _mark_erasing(table, copy_pk):
        return 0, 0
    # Consistent read after the mark: every item the consumer committed before it is seen here.
    items = store.query_prefix(table, copy_pk, "", consistent=True)
    objects = sorted({item["s3_key"] for item in items if item.get("s3_key")})
    markers: list[dict[str, Any]] = []
    for item in items:
        if item.get("type") == "event":
            event_id = item["sk"].rsplit("#", 1)[-1]
            markers.extend(store.query_prefix(table, f"WEBHOOK_SENT#{event_id}", ""))
    if objects:
        _delete_objects(bucket, objects)
    rest = [{"pk": i["pk"], "sk": i["sk"]} for i in [*markers, *items] if i["sk"] != "COPY"]
    store.batch_delete(table, rest)
    store.delete_item(table, {"pk": copy_pk, "sk": "COPY"})  # last: until now a retry finds the copy
    return len(objects), len(rest) + 1


def erase(domain: str, form: Form) -> dict[str, Any]:
    """POST /v3/{domain}/erasures with `address`: erase that recipient's data in the domain."""
    address = _address(form)
    config = settings()
    copy_keys = _copy_keys(domain, address, MAX_COPIES_PER_CALL + 1)
    complete = len(copy_keys) <= MAX_COPIES_PER_CALL
    copies = objects = items = 0
    for copy_pk in copy_keys[:MAX_COPIES_PER_CALL]:
        removed_objects, removed_items = _erase_copy(config.table_name, config.bucket_name, copy_pk)
        copies += 1 if removed_items else 0
        objects += removed_objects
        items += removed_items
    count(Metric.RECIPIENT_COPIES_ERASED, copies)
    # Counts only: the address is never logged.
    logger.info("recipient erased", extra={"copies": copies, "items": items, "complete": complete})
    return {
        "message": "Recipient data has been erased" if complete else "Erasure in progress, call again",
        "address": address,
        "complete": complete,
        "erased": {"copies": copies, "objects": objects, "items": items},
    }
