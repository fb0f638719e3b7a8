"""Per-recipient tracking opt-out: a domain's tracking suppression list.

A suppressed recipient's copy is still accepted and stored, but gets no pixel (and will get no tracked
links), and its copy record says why (`untracked_reason: recipient-suppressed`). The list is shaped like
Mailgun's suppression lists (`items` of `address`, `reason`, `created_at`, and `paging`), but it is a
list of its own: Mailgun's unsubscribes stop delivery, this stops tracking only.

Items: `SUPPRESS#{domain}` / SHA-256 of the lower-cased address. The key is a digest so the address
appears in no key, index or paging URL; the address itself is kept in the item because the list must be
readable back (and the opt-out must keep working after an erasure of the recipient's other data).
Addresses are compared case-insensitively. Recipient addresses only ever travel in request bodies.
"""

from __future__ import annotations

import hashlib
import time
from email.utils import formatdate
from typing import Any

from opentracking.core.config import table_name
from opentracking.core.errors import BadRequest, NotFound
from opentracking.http.forms import Form
from opentracking.mail import compose
from opentracking.storage import keys, store

REASON_SUPPRESSED = "recipient-suppressed"
REASON_TEXT = {
    REASON_SUPPRESSED: "The recipient is on the domain's tracking suppression list: the copy has no pixel.",
}
MAX_ADDRESSES = 1000  # per request, as Mailgun's suppression imports
MAX_REASON = 255
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def address_digest(address: str) -> str:
    return hashlib.sha256(address.strip().lower().encode("utf-8")).hexdigest()


def _addresses(form: Form) -> list[str]:
    values = form.all("address")
    if not any(value.strip() for value in values):
        raise BadRequest("'address' parameter is missing")
    addresses = compose.parse_recipients(values, "address")
    if len(addresses) > MAX_ADDRESSES:
        raise BadRequest(f"At most {MAX_ADDRESSES} addresses per request")
    return addresses


def _entry(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "address": item["address"],
        "reason": item.get("reason", ""),
        "created_at": formatdate(float(item["created_at"]), usegmt=True),
    }


def add(domain: str, form: Form) -> dict[str, Any]:
    """Suppress tracking for one or more addresses (`address`, repeatable; optional `reason`)."""
    addresses = _addresses(form)
    reason = (form.last("reason") or "").strip()
    if len(reason) > MAX_REASON:
        raise BadRequest(f"'reason' must be at most {MAX_REASON} characters")
    now = str(time.time())
    store.batch_put(
        table_name(),
        [
            {
                "pk": keys.suppressions_pk(domain),
                "sk": address_digest(address),
                "type": "suppression",
                "address": address.lower(),
                "reason": reason,
                "created_at": now,
            }
            for address in addresses
        ],
    )
    if len(addresses) == 1:
        return {
            "message": "Address has been added to the tracking suppressions table",
            "address": addresses[0],
        }
    return {"message": f"{len(addresses)} addresses have been added to the tracking suppressions table"}


def remove(domain: str, form: Form) -> dict[str, Any]:
    """Lift the suppression of the addresses in the body; 404 when none of them was suppressed."""
    addresses = _addresses(form)
    table = table_name()
    wanted = [{"pk": keys.suppressions_pk(domain), "sk": address_digest(address)} for address in addresses]
    present = store.batch_get(table, wanted)
    if not present:
        raise NotFound("Address not found in the tracking suppressions table")
    store.batch_delete(table, [{"pk": item["pk"], "sk": item["sk"]} for item in present])
    if len(addresses) == 1:
        return {"message": "Tracking suppression has been removed", "address": addresses[0]}
    return {"message": f"{len(present)} tracking suppressions have been removed"}


def suppressed_among(domain: str, recipients: list[str]) -> frozenset[str]:
    """The lower-cased recipients that are on the domain's list (one BatchGetItem per 100 recipients)."""
    if not recipients:
        return frozenset()
    wanted = [
        {"pk": keys.suppressions_pk(domain), "sk": digest}
        for digest in {address_digest(r) for r in recipients}
    ]
    return frozenset(item["address"] for item in store.batch_get(table_name(), wanted))


def list_page(domain: str, params: dict[str, str | None], *, base_url: str) -> dict[str, Any]:
    """One page of the list, in digest order. The `page` cursor is the last digest seen, never an address."""
    raw_limit = params.get("limit")
    valid = raw_limit is None or (
        raw_limit.isascii() and raw_limit.isdigit() and 1 <= int(raw_limit) <= MAX_LIMIT
    )
    if not valid:
        raise BadRequest(f"'limit' must be between 1 and {MAX_LIMIT}")
    limit = int(raw_limit) if raw_limit else DEFAULT_LIMIT
    pivot = params.get("page") or ""
    if pivot and (len(pivot) != 64 or any(c not in "0123456789abcdef" for c in pivot)):
        raise BadRequest("Invalid page token")
    items = store.query_page(table_name(), keys.suppressions_pk(domain), after=pivot, limit=limit)
    url = f"{base_url}/v3/{domain}/tracking-suppressions?limit={limit}"
    next_pivot = items[-1]["sk"] if items else pivot
    return {
        "items": [_entry(item) for item in items],
        "paging": {
            "first": url,
            "next": f"{url}&page={next_pivot}" if next_pivot else url,
            "previous": url,
            "last": url,
        },
    }


def delete_all(domain: str) -> None:
    """Forget a deleted domain's list (a domain created again later starts clean)."""
    table = table_name()
    items = store.query_prefix(table, keys.suppressions_pk(domain), "")
    store.batch_delete(table, [{"pk": item["pk"], "sk": item["sk"]} for item in items])
