"""Mailgun's tag limit: a domain has at most `TAG_LIMIT` distinct tags (Mailgun's default is 20,000 per
domain; `GET /v3/domains/{d}/limits/tag` reports it). A message's tag that would be one too many is
dropped from that message, which is still accepted and sent; the drop is logged and counted
(`TagLimitReached`). Tags a domain already has are always kept.

The count is the number of the domain's tag items (a tag exists from its first accepted message until it
is deleted or its counters expire), read with one COUNT query. Submission reads it only when a message
brings a tag this process has not seen, and keeps it for `COUNT_MAX_AGE` seconds, so the limit is soft by
what one process admits in that time: near the limit, a few tags more than the limit may be admitted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from opentracking.core.config import settings, table_name
from opentracking.core.metric_names import Metric
from opentracking.core.observability import count, logger
from opentracking.storage import keys, store

COUNT_MAX_AGE = 60.0
MAX_KNOWN_TAGS = 100_000  # per domain and process: the set of tags seen is dropped past this


def tag_count(domain: str) -> int:
    return store.count_partition(table_name(), keys.tags_pk(domain))


def domain_limits(domain: str, domain_id: str) -> dict[str, object]:
    """GET /v3/domains/{domain}/limits/tag, as Mailgun answers it: {id, limit, count}."""
    return {"id": domain_id, "limit": settings().tag_limit, "count": tag_count(domain)}


@dataclass
class _DomainTags:
    known: set[str] = field(default_factory=set)
    count: int = 0
    counted_at: float = float("-inf")


_seen: dict[str, _DomainTags] = {}


def reset_cache() -> None:
    _seen.clear()


def forget(domain: str) -> None:
    """A tag of the domain was deleted: its count is read again at the next new tag."""
    _seen.pop(domain, None)


def admit(domain: str, tags: list[str]) -> list[str]:
    """The message's tags that it may keep: every tag the domain has, and new ones while there is room."""
    if not tags:
        return tags
    state = _seen.setdefault(domain, _DomainTags())
    unseen = [tag for tag in tags if tag not in state.known]
    if not unseen:
        return tags
    if len(state.known) > MAX_KNOWN_TAGS:
        state.known.clear()
    table = table_name()
    found = store.batch_get(table, [{"pk": keys.tags_pk(domain), "sk": tag} for tag in unseen])
    state.known.update(str(item["sk"]) for item in found)
    new = [tag for tag in unseen if tag not in state.known]
    if not new:
        return tags
    if time.monotonic() - state.counted_at > COUNT_MAX_AGE:
        state.count, state.counted_at = tag_count(domain), time.monotonic()
    room = max(settings().tag_limit - state.count, 0)
    admitted, dropped = new[:room], new[room:]
    state.count += len(admitted)  # until the next count: their tag items come with the accepted events
    if dropped:
        count(Metric.TAG_LIMIT_REACHED, len(dropped))
        logger.warning(
            "tag limit reached: new tags dropped from the message",
            extra={"domain": domain, "dropped": len(dropped), "limit": settings().tag_limit},
        )
    return [tag for tag in tags if tag in state.known or tag in admitted]
