"""What users read: the events API, tags and stats, in Mailgun's shapes.

Events come from the `EVENTS#{domain}` partition of `gsi1` (every event, ordered by time), filtered by
Mailgun's filter fields and expressions (`opentracking.reporting.filters`). Paging URLs carry an opaque
token that names the last item seen, the direction and the filters, so `next` and `previous` work from
any page. Stats sum the hourly counters the stream consumer keeps (sharded; see
`opentracking.reporting.consumer`).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode

from opentracking.core.config import table_name
from opentracking.core.errors import BadRequest, NotFound
from opentracking.domains import registry
from opentracking.reporting import consumer, filters, tag_limits
from opentracking.storage import keys, store

MAX_LIMIT = 300
DEFAULT_LIMIT = 100
_MAX_PAGES_SCANNED = 50  # bounds the work one request can cause when filters match little
# Every event type Mailgun's stats know. `stored` (inbound mail kept by a route) always counts zero here: this
# deployment receives no mail.
SUPPORTED_EVENTS = (
    "accepted",
    "delivered",
    "failed",
    "opened",
    "clicked",
    "complained",
    "unsubscribed",
    "stored",
)
# Mailgun's permanent failure reasons in stats; this deployment records bounce, suppress-bounce (SES's
# suppression lists) and old (retries spent).
PERMANENT_REASONS = (
    "bounce",
    "delayed-bounce",
    "suppress-bounce",
    "suppress-unsubscribe",
    "suppress-complaint",
)
RESOLUTIONS = ("hour", "day", "month")
COUNTER_FIELDS = (
    "accepted_total",
    "delivered_total",
    "failed_temporary_total",
    "failed_temporary_espblock",
    "failed_permanent_total",
    *(f"failed_permanent_{reason}" for reason in (*PERMANENT_REASONS, "old", "generic")),
    "opened_total",
    "opened_unique",
    "opened_machine_total",
    "clicked_total",
    "clicked_unique",
    "clicked_machine_total",
    "complained_total",
    "unsubscribed_total",
)


MAX_EPOCH_SECONDS = 253402300799  # 9999-12-31T23:59:59Z


def parse_time(name: str, value: str | None) -> float | None:
    """RFC 2822 (as Mailgun prints dates) or epoch seconds."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        # nan, inf and epochs past year 9999 are no time: datetime cannot hold them
        if not 0 <= seconds <= MAX_EPOCH_SECONDS:
            raise BadRequest(f"'{name}' must be an RFC 2822 date or epoch seconds, not {text!r}")
        return seconds
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        raise BadRequest(f"'{name}' must be an RFC 2822 date or epoch seconds, not {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def rfc2822(timestamp: float) -> str:
    return format_datetime(datetime.fromtimestamp(timestamp, UTC)).replace("+0000", "UTC")


def _yes_no(name: str, value: str | None) -> bool | None:
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered in ("yes", "true"):
        return True
    if lowered in ("no", "false"):
        return False
    raise BadRequest(f"'{name}' must be yes or no")


def _limit(value: str | None, maximum: int) -> int:
    if value is None:
        return min(DEFAULT_LIMIT, maximum)
    # isascii: str.isdigit() also accepts digits int() refuses, such as "²"
    if not (value.strip().isascii() and value.strip().isdigit()) or not 1 <= int(value) <= maximum:
        raise BadRequest(f"'limit' must be between 1 and {maximum}")
    return int(value)


def _encode_page(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).rstrip(b"=").decode()


def _decode_page(token: str) -> dict[str, Any]:
    try:
        state = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadRequest("Invalid page token") from None
    if not isinstance(state, dict) or not isinstance(state.get("f"), dict):
        raise BadRequest("Invalid page token")
    return state


def query_events(
    domain: str, params: dict[str, str | None], *, base_url: str, page: str | None = None
) -> dict[str, Any]:
    """GET /v3/{domain}/events (and its paging URLs)."""
    window: dict[str, Any]
    if page:
        state = _decode_page(page)
        window, ascending, pivot = state["f"], bool(state.get("a")), state.get("p")
        reverse = bool(state.get("r"))
        expressions = filters.from_state(window)
    else:
        expressions = filters.event_filter(params)  # every parameter checked before anything is read
        begin, end = parse_time("begin", params.get("begin")), parse_time("end", params.get("end"))
        asked = _yes_no("ascending", params.get("ascending"))
        # Mailgun: begin alone, or begin before end, reads forward; otherwise newest first.
        ascending = asked if asked is not None else begin is not None and (end is None or begin <= end)
        lo, hi = _window(begin, end, ascending=ascending)
        # The paging token carries the expressions as written, and parses them again.
        window = {
            **{name: value for name, value in params.items() if name in filters.FIELDS and value},
            "lo": lo,
            "hi": hi,
            "limit": _limit(params.get("limit"), MAX_LIMIT),
        }
        pivot, reverse = None, False
    direction = ascending != reverse  # a "previous" page walks the other way, then flips its items
    items = _scan(domain, window, expressions, forward=direction, pivot=pivot)
    if reverse:
        items.reverse()
    payloads = [json.loads(item["payload"]) for item in items]

    def url(state: dict[str, Any] | None) -> str:
        return f"{base_url}/v3/{domain}/events" + (f"/{_encode_page(state)}" if state else "")

    first_sk = items[0]["gsi1sk"] if items else pivot
    last_sk = items[-1]["gsi1sk"] if items else pivot
    base_state = {"f": window, "a": ascending}
    return {
        "items": payloads,
        "paging": {
            "first": url({**base_state}),
            "last": url({**base_state, "r": True}),
            "next": url({**base_state, "p": last_sk}),
            "previous": url({**base_state, "p": first_sk, "r": True}),
        },
    }


def _window(begin: float | None, end: float | None, *, ascending: bool) -> tuple[float | None, float | None]:
    """The time range to read: `begin` is where reading starts, `end` where it stops."""
    if begin is not None and end is not None:
        return min(begin, end), max(begin, end)
    if ascending:
        return begin, end
    return end, begin


def _scan(
    domain: str,
    window: dict[str, Any],
    expressions: filters.EventFilter,
    *,
    forward: bool,
    pivot: str | None,
) -> list[dict[str, Any]]:
    lo = keys.event_time(window["lo"]) if window.get("lo") is not None else "0"
    hi = keys.event_time(window["hi"]) + "~" if window.get("hi") is not None else "~"
    if pivot is not None:
        if forward:
            lo = max(lo, pivot)
        else:
            hi = min(hi, pivot)
    return store.query_index_between(
        table_name(),
        "gsi1",
        ("gsi1pk", keys.events_index_pk(domain)),
        ("gsi1sk", lo, hi),
        forward=forward,
        wanted=_page_limit(window.get("limit")),
        keep=(lambda item: expressions.keeps(json.loads(item["payload"]))) if expressions else None,
        skip_sk=pivot,  # the pivot was on the page before
        max_pages=_MAX_PAGES_SCANNED,
    )


def _page_limit(value: Any) -> int:
    """A paging token's limit, as the first request checked it (a forged one cannot ask for more)."""
    return value if isinstance(value, int) and 1 <= value <= MAX_LIMIT else DEFAULT_LIMIT


# ------------------------------------------------------------------------------------------- tags


def rfc3339(timestamp: float) -> str:
    """A time as Mailgun's tags API sends it: RFC 3339, which its Go SDK decodes into a time.Time."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def tag_object(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "tag": item["sk"],
        "description": item.get("description", ""),
        "first-seen": rfc3339(float(item["first_seen"])),
        "last-seen": rfc3339(float(item["last_seen"])),
    }


TAG_PAGES = ("first", "last", "next", "prev")


def list_tags(domain: str, params: dict[str, str | None], *, base_url: str) -> dict[str, Any]:
    """GET /v3/{domain}/tags, paged as Mailgun pages it: `page` (first, last, next, prev) and `tag`, the tag
    that marks the end of the page before; `prefix` keeps the tags that begin with it."""
    limit = _limit(params.get("limit"), 1000)
    prefix = (params.get("prefix") or "").strip().lower()
    direction, pivot = (params.get("page") or "first").lower(), params.get("tag") or ""
    if direction not in TAG_PAGES:
        raise BadRequest(f"'page' must be one of {', '.join(TAG_PAGES)}")
    items = store.query_prefix(table_name(), keys.tags_pk(domain), prefix)  # in tag order
    if direction == "next":
        page = [item for item in items if item["sk"] > pivot.lower()][:limit]
    elif direction == "prev":
        page = [item for item in items if item["sk"] < pivot.lower()][-limit:]
    elif direction == "last":
        page = items[-limit:]
    else:
        page = items[:limit]

    def url(page_name: str, tag: str | None = None) -> str:
        query = {"limit": str(limit), **({"prefix": prefix} if prefix else {}), "page": page_name}
        return f"{base_url}/v3/{domain}/tags?" + urlencode(
            {**query, **({"tag": tag} if tag is not None else {})}
        )

    return {
        "items": [tag_object(item) for item in page],
        "paging": {
            "first": url("first"),
            "next": url("next", page[-1]["sk"] if page else pivot),
            "previous": url("prev", page[0]["sk"] if page else pivot),
            "last": url("last"),
        },
    }


def tag_names(domain: str) -> list[str]:
    """Every tag of a domain (the tags its messages used, kept while their counters are)."""
    return [str(item["sk"]) for item in store.query_prefix(table_name(), keys.tags_pk(domain), "")]


def get_tag(domain: str, tag: str) -> dict[str, Any]:
    item = store.get_item(table_name(), {"pk": keys.tags_pk(domain), "sk": tag.lower()})
    if item is None:
        raise NotFound("Tag not found")
    return tag_object(item)


MAX_TAG_DESCRIPTION = 1024


def describe_tag(domain: str, tag: str, description: str | None) -> dict[str, Any]:
    """PUT /v3/{domain}/tags/{tag}: the tag's description (a tag exists once a message used it)."""
    if description is None:
        raise BadRequest("'description' parameter is missing")
    if len(description) > MAX_TAG_DESCRIPTION:
        raise BadRequest(f"'description' must be at most {MAX_TAG_DESCRIPTION} characters")
    key = {"pk": keys.tags_pk(domain), "sk": tag.lower()}
    if not store.update_if_exists(table_name(), key, {"description": description}):
        raise NotFound("Tag not found")
    return {"message": "Tag updated"}


def delete_tag(domain: str, tag: str) -> dict[str, Any]:
    """DELETE /v3/{domain}/tags/{tag}: the tag and every counter of it (its hourly stats and its URLs'), as
    Mailgun deletes "all counters for a particular tag, including the tag itself"."""
    get_tag(domain, tag)
    name = tag.lower()
    counters = [
        {"pk": item["pk"], "sk": item["sk"]}
        for shard in range(consumer.SHARDS)
        for pk in (keys.stats_pk(domain, name, shard), keys.url_stats_pk(domain, name, shard))
        for item in store.query_prefix(table_name(), pk, "")
    ]
    store.batch_delete(table_name(), counters)
    store.delete_item(table_name(), {"pk": keys.tags_pk(domain), "sk": name})  # last: a retry finds it
    tag_limits.forget(domain)
    return {"message": "Tag deleted"}


# ------------------------------------------------------------------------------------------- stats


MAX_WINDOW = timedelta(days=3650)  # ten years: more than any stats retention
MAX_BUCKETS = 10_000  # an hour resolution over 400 days (9,600) fits


def duration(text: str) -> timedelta:
    units = {"h": "hours", "d": "days", "m": "days"}
    number, unit = text[:-1], text[-1:].lower()
    if not (number.isascii() and number.isdigit()) or unit not in units:
        raise BadRequest("'duration' must look like 24h, 7d or 1m")
    # a bounded number first: timedelta overflows on a long enough one
    window = timedelta(**{units[unit]: int(number[-7:]) * (30 if unit == "m" else 1)})
    if len(number.lstrip("0")) > 7 or window > MAX_WINDOW:
        raise BadRequest("'duration' must be at most 3650d")
    return window


def stats_window(
    start: str | None, end: str | None, duration_text: str | None, resolution: str, *, duration_wins: bool
) -> tuple[datetime, datetime]:
    """The time window of a stats or metrics query: `end` (default now), and `start`, else `duration`
    before `end` (default 7d); with `duration_wins` (the Metrics API) a duration overrides `start`. Bounded
    so that no query walks more than MAX_BUCKETS buckets."""
    end_ts = parse_time("end", end) or time.time()
    until = datetime.fromtimestamp(end_ts, UTC)
    start_ts = parse_time("start", start)
    if start_ts is not None and not (duration_wins and duration_text):
        since = datetime.fromtimestamp(start_ts, UTC)
    else:
        since = until - duration(duration_text or "7d")
    if since > until:
        raise BadRequest("'start' must be before 'end'")
    step = {"hour": timedelta(hours=1), "day": timedelta(days=1), "month": timedelta(days=28)}[resolution]
    if (until - since) / step > MAX_BUCKETS:
        raise BadRequest(
            f"At most {MAX_BUCKETS} {resolution}s in one query: narrow the window or use a coarser resolution"
        )
    return since, until


def bucket_start(moment: datetime, resolution: str) -> datetime:
    if resolution == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    if resolution == "day":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_bucket(moment: datetime, resolution: str) -> datetime:
    if resolution == "hour":
        return moment + timedelta(hours=1)
    if resolution == "day":
        return moment + timedelta(days=1)
    return (moment.replace(day=28) + timedelta(days=4)).replace(day=1)


def stats(
    domain: str | None, tag: str | None, event_names: list[str], params: dict[str, str | None]
) -> dict[str, Any]:
    """Mailgun's stats of one domain (or one of its tags), or of the account (`domain` None: every
    domain's counters summed, `GET /v3/stats/total`)."""
    if not event_names:
        raise BadRequest("'event' parameter is required")
    for name in event_names:
        if name not in SUPPORTED_EVENTS:
            raise BadRequest(f"'event' must be one of {', '.join(SUPPORTED_EVENTS)}")
    resolution = (params.get("resolution") or "day").lower()
    if resolution not in RESOLUTIONS:
        raise BadRequest("'resolution' must be hour, day or month")
    start, end = stats_window(
        params.get("start"), params.get("end"), params.get("duration"), resolution, duration_wins=False
    )
    if domain is None:
        hourly: dict[datetime, dict[str, int]] = {}
        for each in registry.list_domains(limit=10**9)[0]:
            for hour, counters in hourly_counters(each.name, consumer.ALL_TAGS, start, end).items():
                summed = hourly.setdefault(hour, {})
                for field, value in counters.items():
                    summed[field] = summed.get(field, 0) + value
    else:
        hourly = hourly_counters(domain, tag or consumer.ALL_TAGS, start, end)
    rows, bucket = [], bucket_start(start, resolution)
    while bucket <= end:
        following = next_bucket(bucket, resolution)
        totals: dict[str, int] = {}
        for hour, counters in hourly.items():
            if bucket <= hour < following:
                for field, value in counters.items():
                    totals[field] = totals.get(field, 0) + value
        row: dict[str, Any] = {"time": rfc2822(bucket.timestamp())}
        if "accepted" in event_names:
            accepted = totals.get("accepted_total", 0)
            row["accepted"] = {"incoming": 0, "outgoing": accepted, "total": accepted}
        if "delivered" in event_names:
            delivered = totals.get("delivered_total", 0)
            row["delivered"] = {"smtp": delivered, "http": 0, "total": delivered}
        if "failed" in event_names:
            row["failed"] = {
                "permanent": {
                    **{reason: totals.get(f"failed_permanent_{reason}", 0) for reason in PERMANENT_REASONS},
                    "total": totals.get("failed_permanent_total", 0),
                },
                "temporary": {
                    "espblock": totals.get("failed_temporary_espblock", 0),
                    "total": totals.get("failed_temporary_total", 0),
                },
            }
        if "opened" in event_names:
            row["opened"] = {
                "total": totals.get("opened_total", 0),
                "unique": totals.get("opened_unique", 0),
                "machine": totals.get("opened_machine_total", 0),
            }
        if "clicked" in event_names:
            row["clicked"] = {
                "total": totals.get("clicked_total", 0),
                "unique": totals.get("clicked_unique", 0),
                "machine": totals.get("clicked_machine_total", 0),
            }
        if "complained" in event_names:
            row["complained"] = {"total": totals.get("complained_total", 0)}
        if "unsubscribed" in event_names:
            row["unsubscribed"] = {"total": totals.get("unsubscribed_total", 0)}
        if "stored" in event_names:
            row["stored"] = {"total": 0}
        rows.append(row)
        bucket = following
    body = {
        "description": f"Stats for {tag}" if tag else "Domain stats" if domain else "Account stats",
        "start": rfc2822(bucket_start(start, resolution).timestamp()),  # as Mailgun: the first bucket's
        "end": rfc2822(end.timestamp()),
        "resolution": resolution,
        "stats": rows,
    }
    if tag:
        body["tag"] = tag
    return body


def hourly_counters(domain: str, tag: str, start: datetime, end: datetime) -> dict[datetime, dict[str, int]]:
    lo, hi = (
        keys.hour_sk(consumer.hour_bucket(start.timestamp())),
        keys.hour_sk(consumer.hour_bucket(end.timestamp())),
    )
    hourly: dict[datetime, dict[str, int]] = {}
    for shard in range(consumer.SHARDS):
        for item in store.query_range(table_name(), keys.stats_pk(domain, tag, shard), lo, hi):
            hour = datetime.strptime(keys.hour_of(item["sk"]), "%Y-%m-%dT%H").replace(tzinfo=UTC)
            counters = hourly.setdefault(hour, {})
            for field in COUNTER_FIELDS:
                counters[field] = counters.get(field, 0) + int(item.get(field, 0))
    return hourly


def url_aggregates(domain: str, tag: str | None) -> dict[str, Any]:
    """Clicks per URL (opentracking's addition, in the shape of Mailgun's tag aggregates): each URL
    followed from the domain's (or the tag's) messages, with its total and unique clicks."""
    urls: dict[str, dict[str, int]] = {}
    for shard in range(consumer.SHARDS):
        for item in store.query_prefix(
            table_name(), keys.url_stats_pk(domain, tag or consumer.ALL_TAGS, shard), ""
        ):
            counts = urls.setdefault(item["url"], {"clicked": 0, "unique_clicked": 0})
            counts["clicked"] += int(item.get("clicked_total", 0))
            counts["unique_clicked"] += int(item.get("clicked_unique", 0))
    body: dict[str, Any] = {
        "urls": dict(sorted(urls.items(), key=lambda entry: (-entry[1]["clicked"], entry[0])))
    }
    if tag:
        body["tag"] = tag
    return body
