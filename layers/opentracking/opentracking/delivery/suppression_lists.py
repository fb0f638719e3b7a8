"""Mailgun's suppression lists: bounces, complaints, unsubscribes, and the whitelist that keeps addresses
off the bounces list.

An address on bounces or complaints, or on unsubscribes for all mail (`*`) or for one of the message's
tags, is not sent to: the sender records Mailgun's `failed` event with reason `suppress-bounce`,
`suppress-complaint` or `suppress-unsubscribe` instead (`blocking`). The lists fill themselves: a
permanent bounce joins bounces (unless whitelisted), a complaint complaints, an unsubscribe unsubscribes
(the events consumer calls `record_event` once per event), and users manage them through Mailgun's API.

These are not the tracking suppression list (opentracking.privacy.suppressions): that one stops the pixel
and keeps delivering; these stop delivery. An erasure removes the address from these lists (`forget`),
and keeps the tracking opt-out.

Items: `LIST#{kind}#{domain}` / SHA-256 of the lower-cased address (or whitelisted domain), so no key,
index or paging URL carries an address; the address is kept in the item, for the list to be read back.
Addresses compare case-insensitively and are listed lower-cased.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any
from urllib.parse import unquote, urlencode

from opentracking.core.config import table_name
from opentracking.core.errors import BadRequest, NotFound
from opentracking.http.forms import Form, parse_form
from opentracking.mail import compose
from opentracking.storage import keys, store

MAX_RECORDS = 1000  # per request, as Mailgun's JSON imports
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_TEXT = 1024  # a bounce's error, a whitelist reason
MAX_TAG = 128
ALL_TAGS = "*"
DEFAULT_BOUNCE_CODE = "550"
PAGES = ("first", "next", "previous", "prev", "last")
# Mailgun's codes for mail it did not send because of a list.
SUPPRESSED_CODES = {"suppress-bounce": 605, "suppress-unsubscribe": 606, "suppress-complaint": 607}
SUPPRESSED_TEXT = {
    "suppress-bounce": "Not delivering to previously bounced address",
    "suppress-unsubscribe": "Not delivering to unsubscribed address",
    "suppress-complaint": "Not delivering to a user who marked your messages as spam",
}
BOUNCING_REASONS = ("bounce", "delayed-bounce")  # the failures that add to bounces (Mailgun's hard bounces)


class Kind(StrEnum):
    BOUNCES = "bounces"
    COMPLAINTS = "complaints"
    UNSUBSCRIBES = "unsubscribes"
    WHITELISTS = "whitelists"


@dataclass(frozen=True)
class Wording:
    """How Mailgun names a list in its messages."""

    table: str  # "... has been added to the bounces table"
    removed: str  # one record removed
    cleared: str  # the whole list removed


WORDING = {
    Kind.BOUNCES: Wording(
        "bounces", "Bounced address has been removed", "Bounced addresses for this domain have been removed"
    ),
    Kind.COMPLAINTS: Wording(
        "complaints",
        "Spam complaint has been removed",
        "Complaint addresses for this domain have been removed",
    ),
    Kind.UNSUBSCRIBES: Wording(
        "unsubscribes",
        "Unsubscribe event has been removed",
        "Unsubscribe addresses for this domain have been removed",
    ),
    Kind.WHITELISTS: Wording(
        "whitelists",
        "Whitelist address/domain has been removed",
        "Whitelist addresses/domains for this domain have been removed",
    ),
}


def kind_of(name: str) -> Kind:
    try:
        return Kind(name)
    except ValueError:
        raise NotFound("Not found") from None


def digest(value: str) -> str:
    return hashlib.sha256(value.strip().lower().encode("utf-8")).hexdigest()


def _key(kind: Kind, domain: str, value: str) -> dict[str, str]:
    return {"pk": keys.suppression_list_pk(kind, domain), "sk": digest(value)}


def rfc2822(timestamp: float) -> str:
    """Mailgun's dates: 'Thu, 11 Dec 2025 01:49:40 UTC'."""
    return time.strftime("%a, %d %b %Y %H:%M:%S UTC", time.gmtime(timestamp))


# --- reading requests -----------------------------------------------------------------------------


def _address(value: Any, field: str = "address") -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"'{field}' parameter is missing")
    addresses = compose.parse_recipients([value], field)
    if len(addresses) != 1:
        raise BadRequest(f"'{field}' must be one address")
    return addresses[0].lower()


def _domain_name(value: str) -> str:
    name = value.strip().lower().rstrip(".")
    labels = name.split(".")
    if (
        len(name) > 253
        or len(labels) < 2
        or not all(0 < len(label) <= 63 for label in labels)
        or not all(c.isalnum() or c == "-" for label in labels for c in label)
        or not name.isascii()
    ):
        raise BadRequest("'domain' parameter is not a valid domain name")
    return name


def _text(value: Any, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str | int):
        raise BadRequest(f"'{field}' must be a string")
    text = str(value).strip()
    if len(text) > MAX_TEXT:
        raise BadRequest(f"'{field}' must be at most {MAX_TEXT} characters")
    return text


def _stored_time(timestamp: float) -> Decimal:
    return Decimal(str(round(timestamp, 3)))


def _created_at(value: Any, now: float) -> Decimal:
    """RFC 2822, as Mailgun prints and reads dates; now when absent."""
    if value is None or value == "":
        return _stored_time(now)
    if not isinstance(value, str):
        raise BadRequest("'created_at' must be an RFC 2822 date")
    try:
        parsed = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        raise BadRequest("'created_at' must be an RFC 2822 date") from None
    return _stored_time(parsed.timestamp())


def _tag(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRequest("'tag' must be a non-empty string")
    tag = value.strip().lower()
    if tag != ALL_TAGS and (len(tag) > MAX_TAG or not tag.isascii()):
        raise BadRequest(f"'tag' must be at most {MAX_TAG} ASCII characters")
    return tag


def _json_records(body: bytes) -> list[dict[str, Any]]:
    try:
        records = json.loads(body)
    except (
        ValueError,
        UnicodeDecodeError,
        RecursionError,
    ):  # RecursionError: nesting past the parser's stack
        raise BadRequest("Invalid JSON: the body must be an array of records") from None
    if isinstance(records, dict):
        records = [records]
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise BadRequest("Invalid JSON: the body must be an array of records")
    return records


def _form_records(form: Form) -> list[dict[str, Any]]:
    record: dict[str, Any] = {name: form.last(name) for name, _ in form.fields}
    return [record]


def _items(kind: Kind, domain: str, records: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """Validated list items from request records; BadRequest (nothing written) for any bad one."""
    if not records:
        raise BadRequest("'address' parameter is missing")
    if len(records) > MAX_RECORDS:
        raise BadRequest(f"At most {MAX_RECORDS} records per request")
    items: dict[str, dict[str, Any]] = {}
    for record in records:
        item: dict[str, Any]
        if kind is Kind.WHITELISTS:
            if record.get("address"):
                value, value_type = _address(record["address"]), "address"
            elif record.get("domain"):
                value, value_type = _domain_name(str(record["domain"])), "domain"
            else:
                raise BadRequest("'address' or 'domain' parameter is missing")
            item = {"value_type": value_type, "reason": _text(record.get("reason"), "reason")}
        else:
            value = _address(record.get("address"))
            item = {}
        if kind is Kind.BOUNCES:
            item["code"] = _text(record.get("code"), "code") or DEFAULT_BOUNCE_CODE
            item["error"] = _text(record.get("error"), "error")
        elif kind is Kind.UNSUBSCRIBES:
            tags = record.get("tags")
            if tags is None:
                tags = [record.get("tag") or ALL_TAGS]
            if not isinstance(tags, list) or not tags:
                raise BadRequest("'tags' must be a non-empty array of tags")
            item["tags"] = {_tag(tag) for tag in tags}  # a string set, as the events' ADD writes it
        elif kind is Kind.COMPLAINTS:
            item["count"] = 1
        key = _key(kind, domain, value)
        items[key["sk"]] = {
            **key,
            **item,
            "type": f"list-{kind}",
            "address": value,
            "created_at": _created_at(record.get("created_at"), now),
        }
    return list(items.values())


# --- the API --------------------------------------------------------------------------------------


def entry(kind: Kind, item: dict[str, Any]) -> dict[str, Any]:
    """One record in Mailgun's shape."""
    created_at = rfc2822(float(item["created_at"]))
    if kind is Kind.BOUNCES:
        return {
            "address": item["address"],
            "code": item.get("code", DEFAULT_BOUNCE_CODE),
            "error": item.get("error", ""),
            "created_at": created_at,
        }
    if kind is Kind.COMPLAINTS:
        return {"address": item["address"], "count": int(item.get("count") or 1), "created_at": created_at}
    if kind is Kind.UNSUBSCRIBES:
        return {
            "address": item["address"],
            "tags": sorted(item.get("tags") or [ALL_TAGS]),
            "created_at": created_at,
        }
    return {
        "value": item["address"],
        "reason": item.get("reason", ""),
        "type": item.get("value_type", "address"),
        "createdAt": created_at,
    }


def add(
    kind: Kind, domain: str, content_type: str | None, body: bytes, *, now: float | None = None
) -> dict[str, Any]:
    """POST /v3/{domain}/{kind}: one record as form fields, or up to 1,000 as a JSON array. An address
    already listed is replaced by the new record (Mailgun's behaviour), except that an unsubscribe adds
    its tags to the ones the address has."""
    moment = time.time() if now is None else now
    json_body = (content_type or "").split(";")[0].strip().lower() == "application/json"
    if json_body:
        records = _json_records(body)
    else:
        records = _form_records(parse_form(content_type, body) if body else Form())
    items = _items(kind, domain, records, moment)
    table = table_name()
    if kind is Kind.UNSUBSCRIBES:
        _merge_tags(table, items)
    store.batch_put(table, items)
    wording = WORDING[kind]
    if kind is Kind.WHITELISTS:
        (item,) = items[:1]
        noun = "Address" if item["value_type"] == "address" else "Domain"
        return {
            "message": f"{noun} has been added to the whitelists table",
            "type": item["value_type"],
            "value": item["address"],
        }
    if json_body:
        return {"message": f"{len(items)} addresses have been added to the {wording.table} table"}
    return {"message": f"Address has been added to the {wording.table} table", "address": items[0]["address"]}


def _merge_tags(table: str, items: list[dict[str, Any]]) -> None:
    """An address unsubscribed from one tag and now another is unsubscribed from both."""
    present = {
        item["sk"]: item for item in store.batch_get(table, [{"pk": i["pk"], "sk": i["sk"]} for i in items])
    }
    for item in items:
        earlier = present.get(item["sk"])
        if earlier:
            item["tags"] = set(item["tags"]) | set(earlier.get("tags") or [])
            item["created_at"] = min(item["created_at"], earlier["created_at"])


def get(kind: Kind, domain: str, value: str) -> dict[str, Any]:
    item = store.get_item(table_name(), _key(kind, domain, unquote(value)))
    if item is None:
        raise NotFound(f"Address not found in {WORDING[kind].table} table")
    return entry(kind, item)


def delete(kind: Kind, domain: str, value: str, *, tag: str | None = None) -> dict[str, Any]:
    """Remove one record; for unsubscribes with `tag`, only that tag (the record goes with its last)."""
    value = unquote(value)
    table = table_name()
    key = _key(kind, domain, value)
    item = store.get_item(table, key)
    if item is None:
        raise NotFound(f"Address not found in {WORDING[kind].table} table")
    remaining = set(item.get("tags") or []) - {_tag(tag)} if tag is not None else set()
    if remaining:
        store.put_item(table, {**item, "tags": remaining})
    else:
        store.delete_item(table, key)
    if kind is Kind.WHITELISTS:
        return {"message": WORDING[kind].removed, "value": item["address"]}
    return {"message": WORDING[kind].removed, "address": item["address"]}


def delete_all(kind: Kind, domain: str) -> dict[str, Any]:
    table = table_name()
    items = store.query_prefix(table, keys.suppression_list_pk(kind, domain), "")
    store.batch_delete(table, [{"pk": item["pk"], "sk": item["sk"]} for item in items])
    return {"message": WORDING[kind].cleared}


def list_page(kind: Kind, domain: str, params: dict[str, str | None], *, base_url: str) -> dict[str, Any]:
    """One page in digest order. `page` is Mailgun's direction (first, next, previous, last) and `address`
    the pivot: the digest the paging URLs carry (an address given there is turned into its digest).
    `term` keeps addresses that start with it."""
    raw_limit = params.get("limit")
    if raw_limit is not None and not (
        raw_limit.isascii() and raw_limit.isdigit() and 1 <= int(raw_limit) <= MAX_LIMIT
    ):
        raise BadRequest(f"'limit' must be between 1 and {MAX_LIMIT}")
    limit = int(raw_limit) if raw_limit else DEFAULT_LIMIT
    page = (params.get("page") or "first").strip().lower()
    if page not in PAGES:
        raise BadRequest("'page' must be first, next, previous or last")
    raw_pivot = (params.get("address") or params.get("p") or "").strip()
    pivot = raw_pivot.lower() if _is_digest(raw_pivot) else digest(raw_pivot) if raw_pivot else ""
    term = (params.get("term") or "").strip().lower()
    if len(term) > 320:
        raise BadRequest("'term' is too long")
    prefix_of = ("address", term) if term else None
    pk, table = keys.suppression_list_pk(kind, domain), table_name()
    if page == "last" or (page in ("previous", "prev") and pivot):
        found = store.query_window(
            table,
            pk,
            limit=limit,
            before=pivot if page != "last" else None,
            descending=True,
            prefix_of=prefix_of,
        )
        found.reverse()
    else:
        after = pivot if page == "next" else None
        found = store.query_window(table, pk, limit=limit, after=after, prefix_of=prefix_of)
    query = {"limit": str(limit), **({"term": term} if term else {})}
    url = f"{base_url}/v3/{domain}/{kind}"

    def link(direction: str, at: str | None = None) -> str:
        return f"{url}?{urlencode({'page': direction, **({'address': at} if at else {}), **query})}"

    return {
        "items": [entry(kind, item) for item in found],
        "paging": {
            "first": link("first"),
            "next": link("next", found[-1]["sk"] if found else pivot),
            "previous": link("previous", found[0]["sk"] if found else pivot),
            "last": link("last"),
        },
    }


def _is_digest(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value.lower())


# --- what delivery asks, and what events add -------------------------------------------------------


def blocking(domain: str, recipient: str, tags: Iterable[str]) -> str | None:
    """Why the recipient must not be sent this message (Mailgun's `suppress-*` reason), or None: one
    consistent BatchGetItem of its three records."""
    wanted = [_key(kind, domain, recipient) for kind in (Kind.BOUNCES, Kind.COMPLAINTS, Kind.UNSUBSCRIBES)]
    found = {item["pk"]: item for item in store.batch_get(table_name(), wanted)}
    if keys.suppression_list_pk(Kind.BOUNCES, domain) in found:
        return "suppress-bounce"
    if keys.suppression_list_pk(Kind.COMPLAINTS, domain) in found:
        return "suppress-complaint"
    unsubscribe = found.get(keys.suppression_list_pk(Kind.UNSUBSCRIBES, domain))
    if unsubscribe is not None:
        listed = set(unsubscribe.get("tags") or [ALL_TAGS])
        if ALL_TAGS in listed or listed & {tag.lower() for tag in tags}:
            return "suppress-unsubscribe"
    return None


def whitelisted(domain: str, address: str) -> bool:
    """Whether the address, or its domain, is on the whitelist (it then never joins bounces)."""
    recipient_domain = address.rpartition("@")[2]
    wanted = [_key(Kind.WHITELISTS, domain, address), _key(Kind.WHITELISTS, domain, recipient_domain)]
    return bool(store.batch_get(table_name(), wanted))


def event_operations(
    table: str, domain: str, event: dict[str, Any], unsubscribe_tags: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """What a counted event adds to the lists, as transaction operations (written with the event's
    counted marker, so once): a hard bounce to bounces (not for a whitelisted address), a complaint to
    complaints (its count grows), an unsubscribe to unsubscribes (`unsubscribe_tags`, `*` for all mail:
    the unsubscribe link's scope, kept with the event)."""
    name, address = event["event"], str(event.get("recipient") or "").lower()
    if not address:
        return []
    timestamp = _stored_time(float(event["timestamp"]))
    if name == "failed" and event.get("severity") == "permanent" and event.get("reason") in BOUNCING_REASONS:
        if whitelisted(domain, address):
            return []
        status = event.get("delivery-status") or {}
        item = {
            **_key(Kind.BOUNCES, domain, address),
            "type": f"list-{Kind.BOUNCES}",
            "address": address,
            "code": str(status.get("code") or DEFAULT_BOUNCE_CODE),
            "error": str(status.get("message") or status.get("description") or "")[:MAX_TEXT],
            "created_at": timestamp,
        }
        return [store.put_operation(table, item)]
    if name == "complained":
        return [
            store.update_operation(
                table,
                _key(Kind.COMPLAINTS, domain, address),
                add={"count": 1},
                set_always={"type": f"list-{Kind.COMPLAINTS}", "address": address},
                set_once={"created_at": timestamp},
            )
        ]
    if name == "unsubscribed":
        tags = [str(tag).lower() for tag in unsubscribe_tags or []] or [ALL_TAGS]
        return [
            store.update_operation(
                table,
                _key(Kind.UNSUBSCRIBES, domain, address),
                add={"tags": set(tags)},  # a string set: ADD makes it the union
                set_always={"type": f"list-{Kind.UNSUBSCRIBES}", "address": address},
                set_once={"created_at": timestamp},
            )
        ]
    return []


def forget(domain: str, address: str) -> int:
    """Erasure: the address leaves every list of the domain (not the whitelisted domain it is in).
    Returns how many records went."""
    table = table_name()
    wanted = [_key(kind, domain, address) for kind in Kind]
    present = store.batch_get(table, wanted)
    store.batch_delete(table, [{"pk": item["pk"], "sk": item["sk"]} for item in present])
    return len(present)


def delete_domain(domain: str) -> None:
    """A deleted domain's lists go (a domain created again later starts clean)."""
    for kind in Kind:
        delete_all(kind, domain)
