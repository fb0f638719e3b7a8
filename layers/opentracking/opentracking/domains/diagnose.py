""" "Why are my opens missing?": the seed's troubleshooting list, run as checks.

For a domain, and optionally one message (`message-id`) and one recipient, each check answers with a
status (pass, warn, fail, skip) and a plain-language detail that says what to fix: the tracking CNAME,
HTTPS on the tracking host, whether tracking was on (and which setting decided), the HTML body, the tag,
the scheme of the stored links, whether the pixel was ever loaded, and whether only machines loaded it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from opentracking.core.config import table_name
from opentracking.core.errors import NotFound
from opentracking.domains import dns_check, https_check, identity, registry, tracking_hosts
from opentracking.mail.injection import REASON_TEXT as INJECTION_REASONS
from opentracking.messages import copies as stored_copies
from opentracking.messages.options import TRACKING_REASON_TEXT
from opentracking.privacy import suppressions
from opentracking.storage import keys, store
from opentracking.tracking import bots

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"


@dataclass(frozen=True)
class Check:
    check: str
    status: str
    detail: str


def _certificate(domain: registry.Domain) -> Check:
    """The per-domain certificate and custom domain (HTTPS on the tracking host), from the last check."""
    host = domain.host
    step = host.next_step(domain.name, domain.tracking_host)
    if host.state == tracking_hosts.HostState.SHARED:
        return Check(
            "certificate", SKIP, "This deployment serves every tracking host from one shared target."
        )
    if host.state == tracking_hosts.HostState.READY and host.validation_valid != "invalid":
        return Check("certificate", PASS, step)
    if host.serving:  # mapped, or ready with the validation record gone (renewal will fail)
        return Check("certificate", WARN, step)
    return Check("certificate", FAIL, step)


def _cname(domain: registry.Domain) -> Check:
    if not domain.cname_target:
        return Check("cname", FAIL, domain.host.next_step(domain.name, domain.tracking_host))
    result = dns_check.check_cname(
        domain.tracking_host, domain.cname_target, resolver=dns_check.make_resolver()
    )
    if result.valid:
        return Check("cname", PASS, f"{domain.tracking_host} is a CNAME for {domain.cname_target}.")
    status = WARN if result.mailgun_valid == "unknown" else FAIL
    return Check("cname", status, result.detail)


def _sending_records(domain: registry.Domain) -> Check:
    """SPF, DKIM and MAIL FROM, checked now: mail that fails them lands in spam or is refused, and an
    unopened inbox has no opens to track."""
    sending = domain.identity
    if sending.error:
        return Check("sending_records", FAIL, sending.error)
    if not sending.records:
        return Check("sending_records", SKIP, sending.note or "No sending records apply to this domain.")
    checked = identity.check(sending, dns_check.make_resolver())
    broken = [r for r in checked.records if r.valid == "invalid"]
    unknown = [r for r in checked.records if r.valid == "unknown"]
    if broken:
        return Check("sending_records", FAIL, " ".join(r.detail or "" for r in broken))
    if unknown:
        return Check("sending_records", WARN, " ".join(r.detail or "" for r in unknown))
    names = ", ".join(sorted({f"{r.purpose.upper().replace('_', ' ')}" for r in checked.records}))
    return Check("sending_records", PASS, f"Every sending record is published ({names}).")


def _https(domain: registry.Domain) -> Check:
    result = https_check.check_https(domain.tracking_host)
    if result.status == "ok":
        status = PASS
    elif result.ok:  # valid but expiring soon
        status = WARN
    else:
        status = FAIL
    return Check("https", status, result.detail)


def _message_copies(domain: registry.Domain, message_id: str) -> list[dict[str, Any]]:
    bare = message_id.strip().strip("<>")
    copies = store.query_index(table_name(), "gsi1", "gsi1pk", keys.copies_index_pk(domain.name, bare))
    if not copies:
        raise NotFound(f"Message not found: {message_id}")
    return copies


def _message_record(domain: registry.Domain, message_id: str) -> dict[str, Any]:
    bare = message_id.strip().strip("<>")
    records = store.query_index(table_name(), "gsi1", "gsi1pk", keys.message_index_pk(domain.name, bare))
    if not records:
        raise NotFound(f"Message not found: {message_id}")
    return records[0]


def _tracking(domain: registry.Domain, message: dict[str, Any] | None) -> Check:
    if message is None:
        if domain.open_tracking:
            return Check(
                "tracking_enabled",
                PASS,
                "Open tracking is on for the domain; messages can still switch it "
                "off with o:tracking-opens=no or X-Mailgun-Track-Opens: no.",
            )
        return Check(
            "tracking_enabled",
            WARN,
            "Open tracking is off for the domain, so only messages sent with "
            "o:tracking-opens=yes (or o:tracking=yes, X-Mailgun-Track-Opens: yes) are tracked. Switch it "
            f"on with PUT /v3/domains/{domain.name}/tracking/open active=yes.",
        )
    source = message.get("tracking_source", "domain")
    decided = "the domain setting" if source == "domain" else f"the message's {source}"
    reason = message.get("tracking_reason")
    if message.get("opens_tracked"):
        return Check("tracking_enabled", PASS, f"Opens were tracked for this message ({decided} decided).")
    if reason in TRACKING_REASON_TEXT:
        return Check("tracking_enabled", FAIL, f"{TRACKING_REASON_TEXT[reason]} ({decided} decided).")
    if reason in suppressions.REASON_TEXT:
        return Check("tracking_enabled", FAIL, suppressions.REASON_TEXT[reason])
    return Check("tracking_enabled", PASS, f"Tracking was asked for ({decided} decided).")


def _html(message: dict[str, Any] | None) -> Check:
    if message is None:
        return Check("html_body", SKIP, "Give message-id to check a message's HTML body.")
    reason = message.get("tracking_reason")
    if reason == "no-html-part":
        return Check(
            "html_body",
            FAIL,
            "The message has no HTML part, and a tracking image can only be embedded "
            "in HTML. Send an html part (the 'html' field) alongside the text.",
        )
    if reason in INJECTION_REASONS:
        return Check("html_body", FAIL, INJECTION_REASONS[reason])
    if not message.get("opens_tracked"):
        return Check(
            "html_body", SKIP, "No pixel was inserted because tracking was off, so the body was not examined."
        )
    return Check("html_body", PASS, "The message has an HTML part and every copy got its pixel.")


def _tag(message: dict[str, Any] | None) -> Check:
    if message is None:
        return Check("tag", SKIP, "Give message-id to check a message's tags.")
    tags = message.get("tags") or []
    if tags:
        return Check("tag", PASS, f"Tagged {', '.join(tags)}: opens are counted per tag as well.")
    return Check(
        "tag",
        WARN,
        "The message has no tag. Tags are optional, but without one its opens only count "
        "towards the domain; add o:tag (or X-Mailgun-Tag) to see a campaign's opens.",
    )


def _links(domain: registry.Domain, copies: list[dict[str, Any]]) -> Check:
    plain: list[str] = []
    for copy in copies:
        if copy.get("tracked"):
            body = stored_copies.read(copy)
            plain += https_check.link_scheme_problems(body, domain.tracking_host)
    if plain:
        return Check(
            "link_scheme",
            FAIL,
            f"{len(plain)} stored pixel link(s) use plain http://; a tracking host "
            "that forces HTTPS (HSTS) would break them. Links made on AWS are always https.",
        )
    return Check(
        "link_scheme",
        PASS,
        "Every stored pixel link is https, so HSTS or an HTTPS redirect on the "
        "tracking host cannot break it.",
    )


def _opted_out(domain: registry.Domain, copies: list[dict[str, Any]]) -> Check | None:
    """Copies that got no pixel because their recipient is on the tracking suppression list."""
    suppressed = [c for c in copies if c.get("untracked_reason") == suppressions.REASON_SUPPRESSED]
    if not suppressed:
        return None
    return Check(
        "recipient_opted_out",
        FAIL,
        f"{len(suppressed)} of {len(copies)} copies got no pixel: their recipients are on the domain's "
        f"tracking suppression list, so their opens cannot be seen. Only if they agreed to tracking, lift "
        f"it with DELETE /v3/{domain.name}/tracking-suppressions.",
    )


def _opens(copies: list[dict[str, Any]]) -> tuple[Check, Check]:
    loads: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for copy in copies:
        for raw in store.query_prefix(table_name(), copy["pk"], keys.OPEN_PREFIX):
            loads.append((copy, raw))
    if not loads:
        return (
            Check(
                "pixel_loaded",
                FAIL,
                "The pixel was never loaded: the recipient has not opened the message yet, "
                "or their mail client blocks images (opens can only be seen when images load).",
            ),
            Check("bot_opens", SKIP, "No opens to classify."),
        )
    verdicts = [
        bots.classify(
            method=raw.get("method", "GET"),
            user_agent=raw.get("user_agent", ""),
            seconds_after_accept=float(raw["ts"]) - float(copy["created_at"]),
            ip=raw.get("ip", ""),
        )
        for copy, raw in loads
    ]
    humans = [v for v in verdicts if not v.bot]
    loaded = Check("pixel_loaded", PASS, f"The pixel was loaded {len(loads)} time(s).")
    if humans:
        return loaded, Check("bot_opens", PASS, f"{len(humans)} of {len(loads)} load(s) look like a person.")
    reasons = sorted({v.reason for v in verdicts})
    return loaded, Check(
        "bot_opens",
        WARN,
        "Every load came from a machine, not a person: "
        + "; ".join(reasons)
        + ". These are not human opens.",
    )


def diagnose(
    domain_name: str, *, message_id: str | None = None, recipient: str | None = None
) -> dict[str, Any]:
    domain = registry.get(domain_name)
    message = _message_record(domain, message_id) if message_id else None
    copies = _message_copies(domain, message_id) if message_id else []
    if recipient:
        copies = [c for c in copies if c["recipient"].lower() == recipient.strip().lower()]
        if not copies:
            raise NotFound(f"No copy of {message_id} was sent to that recipient")
    checks = [
        _certificate(domain),
        _cname(domain),
        _https(domain),
        _sending_records(domain),
        _tracking(domain, message),
        _html(message),
        _tag(message),
    ]
    if copies:
        checks.append(_links(domain, copies))
        opted_out = _opted_out(domain, copies)
        if opted_out:
            checks.append(opted_out)
        checks.extend(_opens(copies))
    else:
        checks.append(
            Check("pixel_loaded", SKIP, "Give message-id (and recipient) to check whether the pixel loaded.")
        )
    failing = [c for c in checks if c.status == FAIL]
    return {
        "domain": domain.name,
        "message-id": message_id,
        "recipient": recipient,
        "checked_at": time.time(),
        "healthy": not failing,
        "checks": [asdict(c) for c in checks],
    }
