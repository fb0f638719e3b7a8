"""Mailgun's message options: how values are parsed and how tracking is decided.

Precedence for opens, most specific first (DESIGN 3.1, the seed's "How do I enable tracking?"):
    o:tracking-opens  >  o:tracking  >  X-Mailgun-Track-Opens  >  X-Mailgun-Track  >  domain setting
and for clicks, the same way (`o:tracking` and `X-Mailgun-Track` switch on opens and clicks):
    o:tracking-clicks >  o:tracking  >  X-Mailgun-Track-Clicks >  X-Mailgun-Track  >  domain setting
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from opentracking.core.errors import BadRequest

MAX_TAGS = 3
MAX_TAG_LENGTH = 128
MAX_VARIABLES_BYTES = 16 * 1024

_TRUE = frozenset({"yes", "true"})
_FALSE = frozenset({"no", "false"})

# Why opens are not tracked for a message, with the sentence shown to the sender. Codes from the
# injector (no HTML part, signed, ...) join these in the submission response.
REASON_DOMAIN_DISABLED = "tracking-disabled"
REASON_MESSAGE_DISABLED = "disabled-by-message"
REASON_CNAME_NOT_READY = "tracking-cname-invalid"
REASON_CLICKS_DOMAIN_DISABLED = "click-tracking-disabled"
REASON_CLICKS_MESSAGE_DISABLED = "clicks-disabled-by-message"
# Click tracking modes: links in HTML and text parts, in HTML parts only, or none.
CLICKS_YES, CLICKS_HTMLONLY, CLICKS_NO = "yes", "htmlonly", "no"
TRACKING_REASON_TEXT = {
    REASON_DOMAIN_DISABLED: "Open tracking is off for this domain and the message did not ask for it "
    "(o:tracking-opens=yes, o:tracking=yes, X-Mailgun-Track-Opens: yes or X-Mailgun-Track: yes).",
    REASON_MESSAGE_DISABLED: "The message switched open tracking off (o:tracking-opens, o:tracking or "
    "an X-Mailgun-Track header set to no).",
    REASON_CLICKS_DOMAIN_DISABLED: "Click tracking is off for this domain and the message did not ask for "
    "it (o:tracking-clicks=yes or htmlonly, o:tracking=yes, X-Mailgun-Track-Clicks or X-Mailgun-Track).",
    REASON_CLICKS_MESSAGE_DISABLED: "The message switched click tracking off (o:tracking-clicks, o:tracking "
    "or an X-Mailgun-Track header set to no).",
    REASON_CNAME_NOT_READY: "The domain's tracking CNAME is missing or does not point to this service, so "
    "no pixel was added (it would be a broken image). Fix the record, then PUT /v3/domains/<domain>/verify.",
}


def parse_bool(name: str, value: str, *, allow_htmlonly: bool = False) -> bool | str:
    """Parse an option value as Mailgun does: yes/no/true/false, case-insensitive (htmlonly for clicks)."""
    normalised = value.strip().lower()
    if normalised in _TRUE:
        return True
    if normalised in _FALSE:
        return False
    if allow_htmlonly and normalised == "htmlonly":
        return "htmlonly"
    allowed = "yes, no, true, false" + (" or htmlonly" if allow_htmlonly else "")
    raise BadRequest(f"'{name}' parameter must be one of {allowed}, not {value.strip()!r}")


def optional_bool(name: str, value: str | None) -> bool | None:
    """A yes/no setting a request may leave out (None): a domain setting it does not change."""
    return None if value is None else bool(parse_bool(name, value))


def optional_click_mode(name: str, value: str | None) -> str | None:
    """A click tracking setting a request may leave out: yes, no or htmlonly, or None."""
    return None if value is None else click_mode(parse_bool(name, value, allow_htmlonly=True))


@dataclass(frozen=True)
class TrackingDecision:
    opens: bool
    top: bool
    reason: str | None  # set when opens is False
    source: str = "domain"  # which setting won: "domain" or the option/header that decided
    clicks: str = CLICKS_NO  # yes (HTML and text links), htmlonly, no
    clicks_source: str = "domain"
    unsubscribes: bool = False  # a signed unsubscribe link in each copy (o:tracking, X-Mailgun-Track)


def click_mode(value: bool | str) -> str:
    """A parsed click value as a mode: True -> yes, False -> no, "htmlonly" stays."""
    if value == CLICKS_HTMLONLY:
        return CLICKS_HTMLONLY
    return CLICKS_YES if value else CLICKS_NO


def decide_tracking(
    options: Mapping[str, str],
    headers: Mapping[str, str],
    *,
    domain_active: bool,
    domain_top: bool,
    domain_clicks: str = CLICKS_NO,
    domain_unsubscribes: bool = False,
) -> TrackingDecision:
    """Decide open tracking, pixel placement and click tracking. `options` holds o: fields (last value
    wins), `headers` the X-Mailgun-* control headers by lower-case name."""
    candidates = (
        ("o:tracking-opens", options.get("o:tracking-opens")),
        ("o:tracking", options.get("o:tracking")),
        ("X-Mailgun-Track-Opens", headers.get("x-mailgun-track-opens")),
        ("X-Mailgun-Track", headers.get("x-mailgun-track")),
    )
    explicit = [(name, parse_bool(name, value)) for name, value in candidates if value is not None]
    if explicit:
        source, parsed = explicit[0]
        opens = bool(parsed)
        reason = None if opens else REASON_MESSAGE_DISABLED
    else:
        source, opens = "domain", domain_active
        reason = None if opens else REASON_DOMAIN_DISABLED

    click_candidates = (
        ("o:tracking-clicks", options.get("o:tracking-clicks"), True),
        ("o:tracking", options.get("o:tracking"), False),
        ("X-Mailgun-Track-Clicks", headers.get("x-mailgun-track-clicks"), True),
        ("X-Mailgun-Track", headers.get("x-mailgun-track"), False),
    )
    # Every given value is validated, also those a more specific one overrides.
    click_explicit = [
        (name, click_mode(parse_bool(name, value, allow_htmlonly=htmlonly)))
        for name, value, htmlonly in click_candidates
        if value is not None
    ]
    clicks_source, clicks = click_explicit[0] if click_explicit else ("domain", domain_clicks)

    top = domain_top
    for name, value in (
        ("o:tracking-pixel-location-top", options.get("o:tracking-pixel-location-top")),
        ("X-Mailgun-Track-Pixel-Location-Top", headers.get("x-mailgun-track-pixel-location-top")),
    ):
        if value is not None:
            top = bool(parse_bool(name, value))
            break
    # Unsubscribe tracking has no option of its own: o:tracking=no (or X-Mailgun-Track: no) switches it off
    # for the message; "yes" does not add footers to a domain that never asked for them.
    general = [
        parse_bool(name, value)
        for name, value in (
            ("o:tracking", options.get("o:tracking")),
            ("X-Mailgun-Track", headers.get("x-mailgun-track")),
        )
        if value is not None
    ]
    unsubscribes = domain_unsubscribes and (not general or bool(general[0]))
    return TrackingDecision(
        opens=opens,
        top=top,
        reason=reason,
        source=source,
        clicks=clicks,
        clicks_source=clicks_source,
        unsubscribes=unsubscribes,
    )


def normalise_tags(raw_tags: Iterable[str]) -> list[str]:
    """Tags as Mailgun stores them: non-ASCII characters stripped, at most 128 characters, compared
    case-insensitively (kept lower-case), duplicates dropped, at most 3 (extra tags are ignored)."""
    tags: list[str] = []
    for raw in raw_tags:
        tag = raw.encode("ascii", "ignore").decode("ascii").strip()[:MAX_TAG_LENGTH].strip().lower()
        if tag and tag not in tags:
            tags.append(tag)
        if len(tags) == MAX_TAGS:
            break
    return tags


def parse_json_object(name: str, value: str) -> dict[str, Any]:
    try:
        parsed = json.loads(value)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
        raise BadRequest(f"'{name}' must be a valid JSON object") from None
    if not isinstance(parsed, dict):
        raise BadRequest(f"'{name}' must be a valid JSON object")
    return parsed


def collect_variables(
    v_fields: Iterable[tuple[str, str]], variables_headers: Iterable[str]
) -> dict[str, Any]:
    """User variables from v: fields and X-Mailgun-Variables headers (JSON objects); v: fields win."""
    variables: dict[str, Any] = {}
    for header in variables_headers:
        variables.update(parse_json_object("X-Mailgun-Variables", header))
    for name, value in v_fields:
        variables[name] = value
    if len(json.dumps(variables).encode()) > MAX_VARIABLES_BYTES:
        raise BadRequest("Variables exceed the 16 kB limit ('v:' fields and X-Mailgun-Variables together)")
    return variables


MAX_DELIVERY_DELAY_SECONDS = 3 * 86400  # Mailgun schedules at most 3 days ahead


def delivery_time(value: str, now: float) -> float | None:
    """`o:deliverytime` (or X-Mailgun-Deliver-By): an RFC 2822 date with its zone, at most 3 days ahead, as
    Mailgun takes it; None when it is now or past (the copy is sent at once). BadRequest otherwise."""
    try:
        moment = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError):
        moment = None
    if moment is None or moment.tzinfo is None:
        raise BadRequest("'o:deliverytime' must be an RFC 2822 date with its time zone")
    at = moment.timestamp()
    if at > now + MAX_DELIVERY_DELAY_SECONDS:
        raise BadRequest("'o:deliverytime' can be at most 3 days in the future")
    return at if at > now else None
