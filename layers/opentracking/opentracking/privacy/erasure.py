"""Per-recipient erasure: everything stored about one address in one domain goes.

For each copy addressed to the recipient (found through `gsi2`, `RCPT#{domain}#{sha256 of the address}`):
its S3 object, and every item of its partition `COPY#{copy_id}`: the copy record, the accepted and opened
events (and with them their `gsi1` index entries), the raw opens, the unique and counted markers; and
the webhook-delivered markers of its events. What is left is aggregate: hourly counters and tags keep
their numbers (an erasure does not rewrite history's totals, and they name no one), message records
name no recipient, and the tracking suppression list keeps the address so the opt-out goes on working.
The address also leaves Mailgun's suppression lists (bounces, complaints, unsubscribes, whitelist): they
are delivery data about the person, and go with the rest of it.

Safe to retry and to race:
- the copy record is marked `erasing` first, so the events consumer writes nothing more for it (its
  transactions check the mark), and deleted last, so a call that fails half-way finds the copy again;
- one call erases at most MAX_COPIES_PER_CALL copies and answers `complete: false` when more remain,
  which bounds its time below the API's timeout; calling again carries on;
- erasing an address with nothing stored (or already erased) succeeds and erases nothing.
"""

from __future__ import annotations

from typing import Any

from opentracking.core.config import settings, table_name
from opentracking.core.errors import BadRequest
from opentracking.core.metric_names import Metric
from opentracking.core.observability import count, logger
from opentracking.delivery import suppression_lists
from opentracking.http.forms import Form
from opentracking.mail import compose
from opentracking.privacy import suppressions
from opentracking.storage import keys, store

MAX_COPIES_PER_CALL = 100


def recipient_key(domain: str, address: str) -> str:
    return keys.recipient_index_pk(domain, suppressions.address_digest(address))


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
    return store.index_partition_keys(table_name(), "gsi2", "gsi2pk", recipient_key(domain, address), limit)


def mark_erasing(table: str, copy_pk: str) -> bool:
    """Mark the copy first: the stream consumer writes nothing more into a copy being erased. False when
    the copy record is already gone (an earlier call finished it)."""
    return store.update_if_exists(table, keys.copy_key(copy_pk), {"erasing": True})


def _erase_copy(table: str, bucket: str, copy_pk: str) -> tuple[int, int]:
    """Erase one copy; returns (objects, items) removed."""
    if not mark_erasing(table, copy_pk):
        return 0, 0
    # Consistent read after the mark: every item the consumer committed before it is seen here.
    items = store.query_prefix(table, copy_pk, "", consistent=True)
    # The copy's own object; a message's template is shared by its other recipients' copies and stays
    # (it holds no token, and no more of this recipient than the message's headers every copy has).
    objects = sorted({item["s3_key"] for item in items if item.get("s3_key") and not item.get("template")})
    markers: list[dict[str, Any]] = []
    for item in items:
        if item.get("type") == "event":
            event_id = item["sk"].rsplit("#", 1)[-1]
            markers.extend(store.query_prefix(table, keys.webhook_sent_pk(event_id), ""))
    if objects:
        store.delete_objects(bucket, objects)
    rest = [{"pk": i["pk"], "sk": i["sk"]} for i in [*markers, *items] if i["sk"] != keys.COPY_SK]
    store.batch_delete(table, rest)
    store.delete_item(table, keys.copy_key(copy_pk))  # last: until now a retry finds the copy
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
    listed = suppression_lists.forget(domain, address) if complete else 0
    count(Metric.RECIPIENT_COPIES_ERASED, copies)
    # Counts only: the address is never logged.
    logger.info("recipient erased", extra={"copies": copies, "items": items, "complete": complete})
    return {
        "message": "Recipient data has been erased" if complete else "Erasure in progress, call again",
        "address": address,
        "complete": complete,
        "erased": {"copies": copies, "objects": objects, "items": items, "list_records": listed},
    }
