"""The read side's writer: the DynamoDB stream consumer's logic.

A raw open (one PutItem on the pixel's hot path) is joined here with its copy record into Mailgun's
`opened` event: recipient, tags, user variables, client info, bot verdict and geolocation. Uniqueness,
counters and webhooks happen here too, idempotently, because streams deliver at least once:

- the event's id is derived from the raw open's key, and the event item is put only if absent, in the
  same transaction as the "total" counter increments: a replay cancels the transaction and counts nothing;
- the first human open of a copy puts a UNIQUE marker, in one transaction with the "unique" increments;
- an `accepted` event (written by the submission) is counted once through a COUNTED marker.

Raw clicks (the click redirect's one PutItem) are joined the same way into Mailgun's `clicked` event,
with its `url`; they are counted per domain and tag (total, unique per copy, machine) and per URL. A human
click on a copy with no human open recorded also records a derived `opened` event (marked `derived`),
unless the domain switched that off (`click_implies_open`): a click proves the message was opened even
when its images were blocked. Privacy settings and erasure apply to clicks as to opens.

Counters are per domain and per tag by hour, sharded over SHARDS items so that no partition runs hot in a
big campaign; readers sum the shards.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from opentracking.core.config import table_name
from opentracking.core.metric_names import Metric
from opentracking.core.observability import count, logger
from opentracking.delivery import suppression_lists
from opentracking.privacy import policy
from opentracking.reporting import aggregates
from opentracking.storage import keys, records, store
from opentracking.tracking import bots, client_info, geolocation
from opentracking.tracking.anonymity import anonymize_ip, is_anonymized
from opentracking.webhooks import delivery

SHARDS = 4
ALL_TAGS = "_all"


def event_id_for(pk: str, sk: str) -> str:
    """A stable, Mailgun-looking id (22 url-safe characters) for the event made from one raw item."""
    digest = hashlib.sha256(f"{pk}\x00{sk}".encode()).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def hour_bucket(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H")


def counter_shard(event_id: str) -> int:
    """The counter shard an event adds to: spread by its id, so a hot tag's counter is SHARDS items."""
    return int.from_bytes(hashlib.sha256(event_id.encode()).digest()[:2], "big") % SHARDS


def counter_key(domain: str, tag: str, shard: int, timestamp: float) -> dict[str, str]:
    return {"pk": keys.stats_pk(domain, tag, shard), "sk": keys.hour_sk(hour_bucket(timestamp))}


def counter_update(
    table: str, key: dict[str, str], increments: dict[str, int], expires: int
) -> dict[str, Any]:
    """One counter item's transaction operation: ADD each increment, and its expiry set once."""
    return store.update_operation(table, key, add=increments, set_once={"expires_at": expires})


def _counter_updates(
    table: str,
    domain: str,
    tags: list[str],
    event_id: str,
    timestamp: float,
    increments: dict[str, int],
    *,
    stats_days: int,
) -> list[dict[str, Any]]:
    expires = int(timestamp) + stats_days * 86400
    shard = counter_shard(event_id)
    return [
        counter_update(table, counter_key(domain, tag, shard, timestamp), increments, expires)
        for tag in [ALL_TAGS, *tags]
    ]


def put_if_absent(table: str, item: dict[str, Any]) -> dict[str, Any]:
    """A transaction's Put that is cancelled if the item exists (a replayed record writes nothing twice)."""
    return store.put_operation(table, item, if_absent=True)


class CopyErased(Exception):
    """The copy record went away (an erasure) between the join and the write."""


def copy_exists(table: str, copy_pk: str) -> dict[str, Any]:
    # Derived items are written only while their copy exists and no erasure has started on it (erasure
    # marks the copy first, then deletes), so an erasure racing the consumer never leaves an event behind.
    return store.check_operation(
        table, keys.copy_key(copy_pk), "attribute_exists(pk) AND attribute_not_exists(erasing)"
    )


def _transact(operations: list[dict[str, Any]]) -> bool:
    """Run the transaction; False when its first (conditional) put found the item already there, and
    CopyErased when a later condition (the copy's existence) failed."""
    try:
        store.transact_write(operations)
    except store.TransactionCancelled as cancelled:
        if cancelled.reasons and cancelled.reasons[0] == "ConditionalCheckFailed":
            return False
        if "ConditionalCheckFailed" in cancelled.reasons[1:]:
            raise CopyErased from None
        raise
    return True


def plain_image(image: dict[str, Any]) -> dict[str, Any]:
    """A stream image (deserialized by Powertools: numbers are Decimals) as JSON values."""
    return {name: _plain(value) for name, value in image.items()}


def _plain(value: object) -> object:
    """Stream images carry Decimals; events are JSON."""
    if isinstance(value, Decimal):
        return int(value) if value == int(value) else float(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def opened_event(
    raw: dict[str, Any], copy: dict[str, Any], verdict: bots.BotVerdict, event_id: str
) -> dict[str, Any]:
    return {
        "event": "opened",
        "id": event_id,
        "timestamp": float(raw["ts"]),
        "log-level": "info",
        "recipient": copy["recipient"],
        "recipient-domain": copy.get("recipient_domain") or copy["recipient"].rpartition("@")[2].lower(),
        "tags": list(copy.get("tags") or []),
        "campaigns": [],  # Mailgun's retired campaigns: always empty, still in its event shape
        "user-variables": json.loads(copy.get("user_variables") or "{}"),
        "ip": raw.get("ip", ""),
        "geolocation": geolocation.locate(
            raw.get("ip", ""), user_agent=raw.get("user_agent", ""), proxied_by_apple=verdict.bot == "apple"
        ),
        "client-info": client_info.describe(raw.get("user_agent", ""), verdict),
        "message": {"headers": {"message-id": copy["message_id"]}},
        # opentracking's additions: why the open was (not) judged a bot, and how the pixel was requested
        "bot-reason": verdict.reason,
        "method": raw.get("method", "GET"),
    }


def handle_open(raw: dict[str, Any], copies: dict[str, dict[str, Any] | None]) -> None:
    _join_and_derive(raw, copies, _derive_open, orphan_metric=Metric.OPEN_WITHOUT_COPY)


def _join_and_derive(
    raw: dict[str, Any],
    cache: dict[str, Any],
    derive: Callable[[str, dict[str, Any], dict[str, Any], dict[str, Any]], None],
    *,
    orphan_metric: Metric,
) -> None:
    """Join a raw open or click with its copy record (read once per batch) and derive from it."""
    table = table_name()
    copy_pk = raw["pk"]
    if copy_pk not in cache:
        cache[copy_pk] = store.get_item(table, keys.copy_key(copy_pk))
    copy = cache[copy_pk]
    if copy is None or copy.get("erasing"):
        _drop_orphan(table, raw, orphan_metric)
        return
    try:
        derive(table, raw, copy, cache)
    except CopyErased:
        cache[copy_pk] = None
        _drop_orphan(table, raw, orphan_metric)


def _drop_orphan(table: str, raw: dict[str, Any], metric: Metric) -> None:
    # The copy expired, was erased or never existed: nothing to join, and nothing to keep. An open or click
    # of an erased recipient's copy must not outlive the erasure.
    store.delete_item(table, {"pk": raw["pk"], "sk": raw["sk"]})
    count(metric)


def _privacy_applied(
    table: str, raw: dict[str, Any], copy: dict[str, Any], cache: dict[str, Any]
) -> tuple[dict[str, Any], policy.PrivacySettings]:
    """The raw item with the domain's privacy settings applied, and those settings. A token issued before
    the domain switched anonymisation on stored the full address: it is truncated in the raw item too,
    before anything is derived from it."""
    domain_privacy = policy.cached(copy["domain"], cache)
    if needs_ip_rewrite(raw, copy, cache):
        raw = {**raw, "ip": anonymize_ip(raw.get("ip", ""))}
        _rewrite_ip(table, raw)
    return raw, domain_privacy


@dataclass(frozen=True)
class PreparedOpen:
    """Everything a raw open becomes, before it is written: its `opened` event and the event's item."""

    raw: dict[str, Any]
    copy_pk: str
    domain: str
    tags: list[str]
    timestamp: float
    verdict: bots.BotVerdict
    event_id: str
    event: dict[str, Any]
    item: dict[str, Any]
    stats_days: int


def needs_ip_rewrite(raw: dict[str, Any], copy: dict[str, Any], cache: dict[str, Any]) -> bool:
    """Whether the domain's privacy settings ask for the raw open's address to be truncated first."""
    domain_privacy = policy.cached(copy["domain"], cache)
    return bool(copy.get("anonymize_ip") or domain_privacy.anonymize_ip) and not is_anonymized(
        raw.get("ip", "")
    )


def open_verdict(raw: dict[str, Any], copy: dict[str, Any]) -> bots.BotVerdict:
    """Whether a raw open (or click) came from a person or a machine, and which."""
    timestamp = float(raw["ts"])
    return bots.classify(
        method=raw.get("method", "GET"),
        user_agent=raw.get("user_agent", ""),
        seconds_after_accept=timestamp - float(copy.get("created_at") or timestamp),
        ip=raw.get("ip", ""),
    )


def prepare_open(
    raw: dict[str, Any], copy: dict[str, Any], domain_privacy: policy.PrivacySettings
) -> PreparedOpen:
    timestamp = float(raw["ts"])
    verdict = open_verdict(raw, copy)
    event_id = event_id_for(raw["pk"], raw["sk"])
    event = opened_event(raw, copy, verdict, event_id)
    domain, tags = copy["domain"], list(copy.get("tags") or [])
    expires_at = int(timestamp) + domain_privacy.event_days() * 86400
    item = event_item(raw["pk"], event, copy, timestamp, event_id, bot=verdict.bot, expires_at=expires_at)
    return PreparedOpen(
        raw, raw["pk"], domain, tags, timestamp, verdict, event_id, event, item, domain_privacy.stats_days()
    )


def event_item(
    copy_pk: str,
    event: dict[str, Any],
    copy: dict[str, Any],
    timestamp: float,
    event_id: str,
    *,
    bot: str,
    expires_at: int,
) -> dict[str, Any]:
    """A stored event (opened, clicked) in its copy's partition, listed by the domain's events index.
    `bot`: the machine kind ("apple", "gmail", "generic"), or "" for a person."""
    return records.event_record(
        copy_pk,
        event,
        domain=copy["domain"],
        expires_at=expires_at,
        recipient=copy["recipient"],
        message_id=copy["message_id"],
        tags=list(copy.get("tags") or []),
        bot=bot,
    )


def unique_marker(opened: PreparedOpen) -> dict[str, Any]:
    """The first human open of a copy is its unique open: this item says which one it was."""
    return records.unique_marker(
        opened.copy_pk, keys.UNIQUE_OPENED_SK, opened.event_id, opened.item["expires_at"]
    )


def _derive_open(table: str, raw: dict[str, Any], copy: dict[str, Any], copies: dict[str, Any]) -> None:
    raw, domain_privacy = _privacy_applied(table, raw, copy, copies)
    opened = prepare_open(raw, copy, domain_privacy)
    counting = _Counting(
        table, opened.domain, opened.tags, opened.event_id, opened.timestamp, opened.stats_days
    )
    machine = 1 if opened.verdict.bot else 0
    is_new = _record(
        table,
        opened.item,
        counting.add(
            {
                "opened_total": 1,
                "opened_machine_total": machine,
                **aggregates.increments(opened.event, "opened"),
            }
        ),
    )
    unique = {"opened_unique": 1, **aggregates.increments(opened.event, "unique_opened")}
    if not opened.verdict.bot and _claim(table, unique_marker(opened), counting.add(unique)):
        count(Metric.UNIQUE_OPENS)
    if is_new:
        count(Metric.OPENED_EVENTS if not opened.verdict.bot else Metric.MACHINE_OPENED_EVENTS)
    # Webhooks after the event is stored; a replay enqueues again (receivers deduplicate on the id).
    delivery.enqueue(opened.domain, opened.event)


@dataclass(frozen=True)
class _Counting:
    """Where one event's counts go: the domain's and each tag's counters, in the event's shard and hour,
    kept as long as the domain keeps stats."""

    table: str
    domain: str
    tags: list[str]
    event_id: str
    timestamp: float
    stats_days: int

    def add(self, increments: dict[str, int]) -> list[dict[str, Any]]:
        return _counter_updates(
            self.table,
            self.domain,
            self.tags,
            self.event_id,
            self.timestamp,
            increments,
            stats_days=self.stats_days,
        )

    def add_for_url(self, url: str, field: str) -> list[dict[str, Any]]:
        return _url_counter_updates(
            self.table,
            self.domain,
            self.tags,
            self.event_id,
            url,
            self.timestamp,
            field,
            stats_days=self.stats_days,
        )


def _record(table: str, item: dict[str, Any], counters: list[dict[str, Any]]) -> bool:
    """Write an event with its counters, while its copy exists; False when it was already there (a replay)."""
    return _transact([put_if_absent(table, item), *counters, copy_exists(table, item["pk"])])


def _claim(table: str, marker: dict[str, Any], counters: list[dict[str, Any]]) -> bool:
    """Put a unique marker with its counters; False when an earlier event holds it (not unique)."""
    return _transact([put_if_absent(table, marker), *counters, copy_exists(table, marker["pk"])])


def _rewrite_ip(table: str, raw: dict[str, Any]) -> None:
    """Replace a raw open's address; only if the item is still there (an erasure may have removed it)."""
    store.update_if_exists(table, {"pk": raw["pk"], "sk": raw["sk"]}, {"ip": raw["ip"]})


def clicked_event(
    raw: dict[str, Any], copy: dict[str, Any], verdict: bots.BotVerdict, event_id: str
) -> dict[str, Any]:
    """Mailgun's `clicked` event: the `opened` shape plus the `url` that was followed."""
    return {**opened_event(raw, copy, verdict, event_id), "event": "clicked", "url": raw["url"]}


def click_verdict(raw: dict[str, Any], copy: dict[str, Any]) -> bots.BotVerdict:
    """The open rules, read for a link: prefetchers that fetch images (Apple's bare `Mozilla/5.0`,
    Gmail's prefetch) do not follow links, so on a link those agents are scanners."""
    verdict = open_verdict(raw, copy)
    if verdict.bot in ("apple", "gmail"):
        return bots.BotVerdict("generic", f"{verdict.reason}; on a link, a scanner")
    return verdict


def url_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:32]


def url_counter_key(domain: str, tag: str, shard: int, url: str) -> dict[str, str]:
    return {"pk": keys.url_stats_pk(domain, tag, shard), "sk": url_key(url)}


def _url_counter_updates(
    table: str,
    domain: str,
    tags: list[str],
    event_id: str,
    url: str,
    timestamp: float,
    field: str,
    *,
    stats_days: int,
) -> list[dict[str, Any]]:
    """Per-URL click counters (per domain and tag, sharded like the hourly ones), kept while clicks come."""
    expires = int(timestamp) + stats_days * 86400
    shard = counter_shard(event_id)
    return [
        store.update_operation(
            table,
            url_counter_key(domain, tag, shard, url),
            add={field: 1},
            set_always={"url": url, "expires_at": expires},
        )
        for tag in [ALL_TAGS, *tags]
    ]


def handle_click(raw: dict[str, Any], cache: dict[str, dict[str, Any] | None]) -> None:
    _join_and_derive(raw, cache, _derive_click, orphan_metric=Metric.CLICK_WITHOUT_COPY)


def _derive_click(table: str, raw: dict[str, Any], copy: dict[str, Any], cache: dict[str, Any]) -> None:
    copy_pk = raw["pk"]
    raw, domain_privacy = _privacy_applied(table, raw, copy, cache)
    timestamp, url = float(raw["ts"]), raw["url"]
    verdict = click_verdict(raw, copy)
    event_id = event_id_for(raw["pk"], raw["sk"])
    event = clicked_event(raw, copy, verdict, event_id)
    domain, tags = copy["domain"], list(copy.get("tags") or [])
    expires_at = int(timestamp) + domain_privacy.event_days() * 86400
    counting = _Counting(table, domain, tags, event_id, timestamp, domain_privacy.stats_days())
    item = {
        **event_item(copy_pk, event, copy, timestamp, event_id, bot=verdict.bot, expires_at=expires_at),
        "url": url,
    }
    machine = 1 if verdict.bot else 0
    is_new = _record(
        table,
        item,
        [
            *counting.add(
                {
                    "clicked_total": 1,
                    "clicked_machine_total": machine,
                    **aggregates.increments(event, "clicked"),
                }
            ),
            *counting.add_for_url(url, "clicked_total"),
        ],
    )
    if not verdict.bot:
        # Unique clicks: the first human click of a copy, and of a copy's URL (each on its own marker).
        copy_marker = records.unique_marker(copy_pk, keys.UNIQUE_CLICKED_SK, event_id, expires_at)
        unique = {"clicked_unique": 1, **aggregates.increments(event, "unique_clicked")}
        if _claim(table, copy_marker, counting.add(unique)):
            count(Metric.UNIQUE_CLICKS)
        url_marker = records.unique_marker(
            copy_pk, keys.unique_clicked_url_sk(url_key(url)), event_id, expires_at
        )
        _claim(table, url_marker, counting.add_for_url(url, "clicked_unique"))
        domain_item = _cached_item(cache, keys.domain_pk(domain), keys.DOMAIN_SK)
        if domain_item is None or domain_item.get("click_implies_open", True):
            _implied_open(table, raw, copy, verdict, event_id, expires_at, counting.stats_days)
    if is_new:
        count(Metric.CLICKED_EVENTS if not verdict.bot else Metric.MACHINE_CLICKED_EVENTS)
    delivery.enqueue(domain, event)


def _cached_item(cache: dict[str, Any], pk: str, sk: str) -> dict[str, Any] | None:
    """One read per item per batch (the domain record, for its click settings)."""
    if pk not in cache:
        cache[pk] = store.get_item(table_name(), {"pk": pk, "sk": sk})
    item: dict[str, Any] | None = cache[pk]
    return item


def _implied_open(
    table: str,
    raw: dict[str, Any],
    copy: dict[str, Any],
    verdict: bots.BotVerdict,
    click_id: str,
    expires_at: int,
    stats_days: int,
) -> None:
    """A human click on a copy with no human open yet: record the open it proves, marked `derived`. It
    takes the copy's unique-open marker, so a pixel load that arrives later is a repeat open, not a new
    unique one, and a replayed click finds the marker and derives nothing again."""
    timestamp = float(raw["ts"])
    open_id = event_id_for(raw["pk"], raw["sk"] + "#derived-open")
    event = {**opened_event(raw, copy, verdict, open_id), "derived": True, "derived-from": click_id}
    domain, tags = copy["domain"], list(copy.get("tags") or [])
    item = {
        **event_item(raw["pk"], event, copy, timestamp, open_id, bot="", expires_at=expires_at),
        "derived": True,
    }
    marker = records.unique_marker(raw["pk"], keys.UNIQUE_OPENED_SK, open_id, expires_at, derived=True)
    counting = _Counting(table, domain, tags, open_id, timestamp, stats_days)
    increments = {
        "opened_total": 1,
        "opened_unique": 1,
        "opened_derived_total": 1,
        **aggregates.increments(event, "opened", "unique_opened"),
    }
    # One transaction: the derived open exists only if it takes the copy's unique-open marker.
    if _claim(table, marker, [store.put_operation(table, item), *counting.add(increments)]):
        count(Metric.DERIVED_OPENS)
        delivery.enqueue(domain, event)


COUNTED_EVENTS = ("accepted", "delivered", "failed", "complained", "unsubscribed")


def event_increments(event: dict[str, Any]) -> dict[str, int]:
    """What one accepted, delivered, failed or complained event adds to its hour's counters (the stats
    API's fields)."""
    name = event["event"]
    if name != "failed":
        return {f"{name}_total": 1}
    if event.get("severity") == "permanent":
        return {"failed_permanent_total": 1, f"failed_permanent_{event.get('reason') or 'generic'}": 1}
    if event.get("reason") == "espblock":
        return {"failed_temporary_total": 1, "failed_temporary_espblock": 1}
    return {"failed_temporary_total": 1}


def _aggregated(event: dict[str, Any]) -> dict[str, int]:
    """The tag aggregates an accepted, delivered, complained or unsubscribed event counts in."""
    name = event["event"]
    return aggregates.increments(event, name) if name in aggregates.METRICS_OF["providers"] else {}


def handle_counted(item: dict[str, Any], cache: dict[str, Any]) -> None:
    """An accepted, delivered, failed, complained or unsubscribed event (written by the submission, the
    sender or the unsubscribe page): counted once, through a COUNTED marker, and sent to its webhooks."""
    table = table_name()
    event = json.loads(item["payload"])
    timestamp = float(event["timestamp"])
    domain, tags = item["domain"], list(item.get("tags") or [])
    stats_days = policy.cached(domain, cache).stats_days()
    marker = {"pk": item["pk"], "sk": keys.counted_sk(event["id"]), "expires_at": item.get("expires_at")}
    counting = _Counting(table, domain, tags, event["id"], timestamp, stats_days)
    tag_updates = [
        store.update_operation(
            table,
            {"pk": keys.tags_pk(domain), "sk": tag},
            set_always={
                "last_seen": Decimal(str(timestamp)),
                "expires_at": int(timestamp) + stats_days * 86400,
            },
            set_once={"first_seen": Decimal(str(timestamp))},
        )
        for tag in (tags if event["event"] == "accepted" else [])
    ]
    try:
        # The suppression lists change with the count, in its transaction: once per event.
        lists = suppression_lists.event_operations(table, domain, event, item.get("unsubscribe_tags"))
        counts = {**event_increments(event), **_aggregated(event)}
        _claim(table, marker, [*counting.add(counts), *tag_updates, *lists])
    except CopyErased:
        # A replay after the recipient was erased (or an erasure before the first count): the marker
        # must not come back into the erased partition.
        count(Metric.ACCEPTED_AFTER_ERASURE)
        return
    # Webhooks after the event is counted; a replay enqueues again (receivers deduplicate on the id). Without
    # a URL for the type this is one cached read per domain and type (subscriptions.targets).
    delivery.enqueue(domain, event)


def handle_image(image: dict[str, Any], copies: dict[str, dict[str, Any] | None]) -> None:
    """One new item from the stream: raw opens, raw clicks and accepted, delivered and failed events are
    processed, the rest ignored. `copies` caches what the batch has read: copy records, domains and
    their privacy settings."""
    image = plain_image(image)
    kind = image.get("type")
    if kind == "open":
        handle_open(image, copies)
    elif kind == "click":
        handle_click(image, copies)
    elif kind == "event" and image.get("event") in COUNTED_EVENTS:
        handle_counted(image, copies)
    else:
        logger.debug("stream record ignored", extra={"type": kind})
