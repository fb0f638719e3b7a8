"""The table's records that more than one place writes, built once: events (accepted, opened, clicked,
derived opens) and the unique markers beside them. Keys come from `storage.keys`."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from opentracking.storage import keys


def new_event_id() -> str:
    """A new event's id in Mailgun's form: 22 url-safe characters (16 random bytes, unpadded base64)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def event_record(
    copy_pk: str, event: dict[str, Any], *, domain: str, expires_at: int, **fields: Any
) -> dict[str, Any]:
    """A Mailgun event stored in its copy's partition and listed, in time order, by the domain's events
    index. `event` is the event as the API shows it (its `event`, `id` and `timestamp` make the keys);
    `fields` are the attributes the events API filters on and erasure reads (recipient, message_id,
    tags, ...)."""
    name, event_id, timestamp = event["event"], event["id"], float(event["timestamp"])
    return {
        "pk": copy_pk,
        "sk": keys.event_sk(timestamp, name, event_id),
        "type": "event",
        "event": name,
        "payload": json.dumps(event),
        "gsi1pk": keys.events_index_pk(domain),
        "gsi1sk": keys.events_index_sk(timestamp, event_id),
        "domain": domain,
        "expires_at": expires_at,
        **fields,
    }


def unique_marker(
    copy_pk: str, sk: str, event_id: str, expires_at: int, *, derived: bool = False
) -> dict[str, Any]:
    """Which event was the copy's first (human) open or click: put only if absent, so the first wins."""
    marker: dict[str, Any] = {"pk": copy_pk, "sk": sk, "event_id": event_id, "expires_at": expires_at}
    if derived:
        marker["derived"] = True
    return marker
