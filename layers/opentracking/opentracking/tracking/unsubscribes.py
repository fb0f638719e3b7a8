"""GET|POST /u/{token}: a copy's unsubscribe link, on the domain's tracking host.

GET shows a small page that asks, with one button; the button POSTs to the same URL. A POST records the
unsubscribe: Mailgun's `unsubscribed` event in the copy's partition (the events consumer then counts it,
adds the address to the domain's unsubscribes list for all mail or for the message's tags, and sends the
`unsubscribed` webhook). The same POST is RFC 8058's one-click unsubscribe, which mailbox providers send
with the body `List-Unsubscribe=One-Click` when a reader presses their own "Unsubscribe" button.

Why GET does not unsubscribe: link scanners (mail security gateways) fetch every link of a message before
the reader sees it; an unsubscribe on GET would unsubscribe readers who never asked. RFC 8058 asks for
POST for the same reason.

The token is a click token sealing `unsubscribe:all` or `unsubscribe:tag` instead of a URL (the click
redirect refuses it); a forged or edited one gets a 404 page and records nothing. Recording twice is
harmless: a marker per copy and scope makes the second POST change nothing. Pages are static (nothing
from the request or the copy is echoed: the address is not shown to whoever holds the link), with a
strict Content-Security-Policy.
"""

from __future__ import annotations

import hashlib
from typing import Any

from opentracking.core.config import settings, table_name
from opentracking.core.errors import StorageUnavailable
from opentracking.core.metric_names import Metric
from opentracking.core.observability import count, logger
from opentracking.delivery import suppression_lists
from opentracking.mail import unsubscribe
from opentracking.reporting import consumer
from opentracking.storage import keys, records, store
from opentracking.tracking import bots, pixel, tokens
from opentracking.tracking.anonymity import anonymize_ip

_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # No script, no style, no image: a form that may post only back here.
    "Content-Security-Policy": "default-src 'none'; form-action 'self'; frame-ancestors 'none'",
}
_HEAD = (
    "<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content='width=device-width'>"
)
_CONFIRM = {
    unsubscribe.ALL: "Stop all emails from this sender?",
    unsubscribe.TAG: "Stop emails like this one from this sender?",
}


def _page(status: int, title: str, body: str) -> dict[str, Any]:
    html = f"{_HEAD}<title>{title}</title></head><body><main><h1>{title}</h1>{body}</main></body></html>"
    return {"statusCode": status, "headers": dict(_HEADERS), "body": html}


def confirm_page(scope: str) -> dict[str, Any]:
    return _page(
        200,
        _CONFIRM[scope],
        "<p>You will not receive them any more.</p>"
        "<form method=post><button type=submit>Unsubscribe</button></form>",
    )


def done_page() -> dict[str, Any]:
    return _page(200, "You are unsubscribed", "<p>You will not receive these emails any more.</p>")


def invalid_page() -> dict[str, Any]:
    return _page(
        404,
        "This link is not valid",
        "<p>The link you followed is damaged or was not issued by this service. Use the unsubscribe link "
        "from the original email.</p>",
    )


def unavailable_page() -> dict[str, Any]:
    page = _page(503, "Please try again in a moment", "<p>Your request could not be recorded just now.</p>")
    page["headers"]["Retry-After"] = "5"
    return page


def scope_of(claims: tokens.ClickClaims) -> str | None:
    """ALL or TAG for an unsubscribe token; None for any other click token."""
    if not claims.url.startswith(unsubscribe.SEALED_PREFIX):
        return None
    scope = claims.url.removeprefix(unsubscribe.SEALED_PREFIX)
    return scope if scope in (unsubscribe.ALL, unsubscribe.TAG) else None


def handle(event: dict[str, Any]) -> dict[str, Any]:
    """The whole route: verify, then ask (GET) or record (POST). Never raises."""
    request = pixel.ReaderRequest.from_event(event, kind="unsubscribe")
    try:
        keyring = tokens.load_keyring(settings().token_secret_name)
        claims = tokens.verify_click_token(keyring, request.token)
    except tokens.InvalidToken:
        count(Metric.INVALID_UNSUBSCRIBE_TOKEN)
        return invalid_page()
    except Exception as exc:
        logger.warning("unsubscribe keys unavailable", extra={"error": type(exc).__name__})
        return unavailable_page()
    scope = scope_of(claims)
    if scope is None:
        count(Metric.INVALID_UNSUBSCRIBE_TOKEN)
        return invalid_page()
    if request.method != "POST":
        return confirm_page(scope)
    try:
        recorded = record(request, claims, scope)
    except (StorageUnavailable, *store.AWS_ERRORS) as exc:
        logger.warning("unsubscribe not recorded", extra={"error": type(exc).__name__})
        return unavailable_page()
    if recorded:
        count(Metric.UNSUBSCRIBES_RECORDED)
    return done_page()


def event_id(copy_pk: str, scope: str) -> str:
    return hashlib.sha256(f"{copy_pk}#unsubscribed#{scope}".encode()).hexdigest()[:32]


def record(request: pixel.ReaderRequest, claims: tokens.ClickClaims, scope: str) -> bool:
    """Mailgun's `unsubscribed` event for the copy, once per copy and scope; False when it was recorded
    before, or the copy is gone (expired or erased: there is no one left to unsubscribe)."""
    table = table_name()
    copy_pk = keys.copy_pk(claims.copy_id)
    copy = store.get_item(table, keys.copy_key(copy_pk))
    if copy is None or copy.get("erasing"):
        count(Metric.UNSUBSCRIBE_WITHOUT_COPY)
        return False
    ip = anonymize_ip(request.source_ip) if claims.anonymize_ip else request.source_ip
    raw = {"ts": request.at, "ip": ip, "user_agent": request.user_agent, "method": request.method}
    identifier = event_id(copy_pk, scope)
    opened = consumer.opened_event(raw, copy, bots.BotVerdict("", ""), identifier)
    event = {**opened, "event": "unsubscribed"}
    del event["bot-reason"]
    tags = list(copy.get("tags") or [])
    item = records.event_record(
        copy_pk,
        event,
        domain=copy["domain"],
        expires_at=int(copy.get("expires_at") or request.at),
        recipient=copy["recipient"],
        message_id=copy["message_id"],
        tags=tags,
    )
    # What the unsubscribes list gets: all mail, or the message's tags (all mail when it has none).
    item["unsubscribe_tags"] = tags if scope == unsubscribe.TAG and tags else [suppression_lists.ALL_TAGS]
    marker = {"pk": copy_pk, "sk": keys.unsubscribed_sk(scope), "expires_at": item["expires_at"]}
    try:
        store.transact_write(
            [
                store.put_operation(table, marker, if_absent=True),
                store.put_operation(table, item),
                store.check_operation(
                    table, keys.copy_key(copy_pk), "attribute_exists(pk) AND attribute_not_exists(erasing)"
                ),
            ]
        )
    except store.TransactionCancelled:
        return False
    return True
