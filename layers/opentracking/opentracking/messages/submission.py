"""Accepting a message: decide tracking, make one copy per envelope recipient with its own pixel, store
the copies in S3 and the records in DynamoDB, all or nothing."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from opentracking.core.config import Settings
from opentracking.core.errors import BadRequest, PayloadTooLarge, StorageUnavailable
from opentracking.core.metric_names import Metric
from opentracking.core.observability import count, logger
from opentracking.delivery import jobs
from opentracking.domains import registry
from opentracking.http.forms import Form
from opentracking.mail import compose, links, splice, unsubscribe
from opentracking.mail.injection import REASON_TEXT, inject
from opentracking.mail.mime import attachments as mime_attachments
from opentracking.messages import copies, options, stored
from opentracking.privacy import erasure, policy, suppressions
from opentracking.reporting import tag_limits
from opentracking.storage import keys, records, store
from opentracking.tracking import tokens

MAX_RECIPIENTS = 1000
MAX_MESSAGE_BYTES = 25 * 1024 * 1024  # Mailgun's limit for a message with its attachments
# Planning a template costs three renders of the message (two probes and one checked copy): below this
# many tracked copies the per-copy path is as cheap.
SPLICE_MIN_COPIES = 4
TEMPLATE_NAME = "template.bin"  # the message's copies, stored once (messages.copies)
QUEUED = "Queued. Thank you."


@dataclass
class Copy:
    copy_id: bytes
    recipient: str
    message: bytes
    user_variables: dict[str, Any]
    s3_key: str = ""
    tracked: bool = False
    untracked_reason: str | None = None  # why this copy alone has no pixel (the recipient opted out)
    links: int = 0  # links rewritten to click-tracking redirects
    from_template: bool = False  # stored once for the message, as its template (messages.copies)
    to_header: str | None = None  # its own To header (batch sending), else the message's

    @property
    def copy_hex(self) -> str:
        return self.copy_id.hex()


@dataclass
class Submission:
    """Everything decided about a message before anything is stored."""

    domain: registry.Domain
    message_id: str
    sender: str  # the envelope sender: the From header's address
    subject: str
    recipients: list[str]
    tags: list[str]
    user_variables: dict[str, Any]
    decision: options.TrackingDecision
    testmode: bool
    deliver_at: float | None = None  # o:deliverytime: when the copies are sent (None: at once)
    require_tls: bool = False  # o:require-tls, else the domain's: no TLS, no delivery
    skip_verification: bool = False  # o:skip-verification, else the domain's: any certificate will do
    from_header: str = ""  # the From header as written ("News <news@example.com>"), for the events
    to_header: str = ""  # the To header as written, for the events
    attachments: list[dict[str, Any]] = field(default_factory=list)  # Mailgun's event shape of each file
    copies: list[Copy] = field(default_factory=list)
    reason: str | None = None  # why opens are not tracked, when they are not
    privacy: policy.PrivacySettings = field(default_factory=policy.PrivacySettings)
    click_reason: str | None = None  # why clicks are not tracked, when they are not
    unsubscribe_reason: str | None = None  # why copies carry no unsubscribe link, when tracking asked for one
    template: bytes | None = None  # the copies' template as stored (copies.encode_template), if planned
    api_base: str = ""  # this API's address, for the accepted events' storage URLs (gateway.api_base_url)

    @property
    def opens_tracked(self) -> bool:
        return self.decision.opens and self.reason is None

    @property
    def clicks_tracked(self) -> bool:
        return self.decision.clicks != options.CLICKS_NO and self.click_reason is None

    @property
    def links(self) -> int:
        return max((copy.links for copy in self.copies), default=0)


def reason_text(code: str) -> str:
    return (
        options.TRACKING_REASON_TEXT.get(code)
        or suppressions.REASON_TEXT.get(code)
        or unsubscribe.REASON_TEXT.get(code)
        or REASON_TEXT.get(code, code)
    )


def _control_headers(form: Form, mime_headers: list[tuple[str, str]]) -> dict[str, list[str]]:
    """X-Mailgun-* headers by lower-case name: from the MIME message and from h: fields."""
    headers: dict[str, list[str]] = {}
    for name, value in mime_headers:
        headers.setdefault(name, []).append(value)
    for name, value in form.with_prefix("h:"):
        if name.lower().startswith(compose.CONTROL_HEADER_PREFIX):
            headers.setdefault(name.lower(), []).append(value)
    return headers


def _envelope(form: Form, *, mime: bool) -> list[str]:
    to = form.all("to")
    if not to or not any(value.strip() for value in to):
        raise BadRequest("'to' parameter is missing")
    fields = [("to", to)] if mime else [("to", to), ("cc", form.all("cc")), ("bcc", form.all("bcc"))]
    recipients: list[str] = []
    seen: set[str] = set()
    for name, values in fields:
        for address in compose.parse_recipients(values, name):
            if address.lower() not in seen:
                seen.add(address.lower())
                recipients.append(address)
    if len(recipients) > MAX_RECIPIENTS:
        raise BadRequest(f"Too many recipients: {len(recipients)} (at most {MAX_RECIPIENTS} per message)")
    return recipients


def plan(form: Form, domain: registry.Domain, *, mime: bool) -> Submission:
    """Validate the request and decide everything, one untracked copy per recipient. Raises BadRequest
    before anything is stored."""
    recipients = _envelope(form, mime=mime)
    if mime:
        uploads = form.files_named("message")
        raw = uploads[-1].data if uploads else (form.last("message") or "").encode("utf-8")
        if not raw.strip():
            raise BadRequest("'message' parameter is missing")
        if len(raw) > MAX_MESSAGE_BYTES:
            raise PayloadTooLarge("Message size exceeds the 25 MB limit")
        prepared = compose.prepare_mime(raw, domain.name)
        source: object = prepared
        message_id, sender, subject = prepared.message_id, prepared.sender, prepared.subject
        to_header, attachments = prepared.to, mime_attachments(prepared.message)
        control = _control_headers(form, prepared.control_headers)
    else:
        parts = compose.parts_from_form(form)
        size = sum(len(f.data) for f in parts.attachments + parts.inline)
        size += sum(len(x or "") for x in (parts.text, parts.html, parts.amp_html))
        if size > MAX_MESSAGE_BYTES:
            raise PayloadTooLarge("Message size exceeds the 25 MB limit")
        source = parts
        message_id = parts.message_id or compose.new_message_id(domain.name)
        sender, subject = parts.sender, parts.subject
        to_header = ", ".join(parts.to_header)
        attachments = [
            {
                "filename": upload.filename,
                "content-type": compose.content_type_of(upload),
                "size": len(upload.data),
            }
            for upload in parts.attachments
        ]
        control = _control_headers(form, [])

    option_values = {name: value for name, value in form.fields if name.startswith("o:")}
    last_header = {name: values[-1] for name, values in control.items()}
    decision = options.decide_tracking(
        option_values,
        last_header,
        domain_active=domain.open_tracking,
        domain_top=domain.place_at_the_top,
        domain_clicks=domain.click_tracking,
        domain_unsubscribes=domain.unsubscribe_tracking,
    )
    testmode = (
        bool(options.parse_bool("o:testmode", option_values["o:testmode"]))
        if "o:testmode" in option_values
        else False
    )
    require_tls = _connection_option(option_values, last_header, "require-tls", domain.require_tls)
    skip_verification = _connection_option(
        option_values, last_header, "skip-verification", domain.skip_verification
    )
    deliverytime = option_values.get("o:deliverytime") or last_header.get("x-mailgun-deliver-by")
    deliver_at = options.delivery_time(deliverytime, time.time()) if deliverytime else None
    tag_values = form.all("o:tag") + [
        tag for value in control.get("x-mailgun-tag", []) for tag in value.split(",")
    ]
    user_variables = options.collect_variables(form.with_prefix("v:"), control.get("x-mailgun-variables", []))
    recipient_variables_raw = form.last("recipient-variables")
    recipient_variables = (
        options.parse_json_object("recipient-variables", recipient_variables_raw)
        if recipient_variables_raw
        else None
    )
    submission = Submission(
        domain=domain,
        message_id=message_id,
        sender=compose.sender_address(sender),
        subject=subject,
        recipients=recipients,
        tags=tag_limits.admit(domain.name, options.normalise_tags(tag_values)),
        user_variables=user_variables,
        decision=decision,
        testmode=testmode,
        deliver_at=deliver_at,
        require_tls=require_tls,
        skip_verification=skip_verification,
        from_header=" ".join(sender.split()),
        to_header=" ".join(to_header.split()),
        attachments=attachments,
        reason=decision.reason,
        click_reason=_click_reason(decision),
    )
    submission.copies = _make_copies(submission, source, recipient_variables)
    return submission


def _connection_option(
    options_given: dict[str, str], headers: dict[str, str], name: str, domain: bool
) -> bool:
    """Mailgun's TLS connection settings for one message: `o:<name>`, else the X-Mailgun-<Name> header,
    else the domain's setting (the message's overrides the domain's)."""
    value = options_given.get(f"o:{name}") or headers.get(f"x-mailgun-{name}")
    return domain if value is None else bool(options.parse_bool(f"o:{name}", value))


def _make_copies(
    submission: Submission, source: object, recipient_variables: dict[str, Any] | None
) -> list[Copy]:
    """One copy per recipient. Without recipient-variables every copy is the same message until its pixel
    goes in, so it is built once (building it per recipient would re-fold an N-address To header N times)."""
    shared: bytes | None = None
    if isinstance(source, compose.PreparedMime):
        shared = source.message
    elif recipient_variables is None:
        shared = compose.build_message(source, submission.message_id)  # type: ignore[arg-type]
    copies = []
    for recipient in submission.recipients:
        own = (recipient_variables or {}).get(recipient) or {}
        if not isinstance(own, dict):
            raise BadRequest("'recipient-variables' must map each recipient to a JSON object")
        # Batch sending (recipient-variables): each copy shows only its own recipient in To.
        message = shared or compose.build_message(
            source,  # type: ignore[arg-type]
            submission.message_id,
            variables=own,
            to_override=[recipient],
        )
        variables = {
            key: compose.substitute(value, own) if isinstance(value, str) else value
            for key, value in submission.user_variables.items()
        }
        copies.append(
            Copy(
                copy_id=tokens.new_copy_id(),
                recipient=recipient,
                message=message,
                user_variables=variables,
                to_header=None if shared else recipient,
            )
        )
    return copies


def _click_reason(decision: options.TrackingDecision) -> str | None:
    if decision.clicks != options.CLICKS_NO:
        return None
    if decision.clicks_source == "domain":
        return options.REASON_CLICKS_DOMAIN_DISABLED
    return options.REASON_CLICKS_MESSAGE_DISABLED


def track(
    submission: Submission,
    keyring: tokens.KeyRing,
    scheme: str,
    *,
    suppressed: frozenset[str] = frozenset(),
) -> None:
    """Point each copy's links at click-tracking redirects and give it its own pixel, as decided; or
    record why not. `suppressed`: the lower-cased recipients on the domain's tracking suppression list,
    whose copies get no pixel."""
    if not submission.domain.tracking_ready:
        # A pixel or a link on a host that does not resolve to us would be a broken image or a dead link.
        if submission.decision.opens:
            submission.reason = options.REASON_CNAME_NOT_READY
        if submission.clicks_tracked:
            submission.click_reason = options.REASON_CNAME_NOT_READY
        if submission.decision.unsubscribes:
            submission.unsubscribe_reason = options.REASON_CNAME_NOT_READY
        return
    if _track_by_template(submission, keyring, scheme, suppressed):
        # Opting out of tracking is not opting out of the unsubscribe link: those copies get theirs here.
        _add_unsubscribe_links(
            submission, keyring, scheme, [c for c in submission.copies if c.recipient.lower() in suppressed]
        )
        return
    _add_unsubscribe_links(submission, keyring, scheme, submission.copies)
    if submission.clicks_tracked:
        _rewrite_links(submission, keyring, scheme, suppressed)
    if not submission.decision.opens:
        return
    for copy in submission.copies:
        if copy.recipient.lower() in suppressed:
            copy.untracked_reason = suppressions.REASON_SUPPRESSED
            continue
        token = tokens.issue_token(
            keyring,
            copy.copy_id,
            submission.domain.name,
            anonymize_ip=submission.privacy.anonymize_ip,
            retention_days=submission.privacy.event_retention_days,
        )
        url = f"{scheme}://{submission.domain.tracking_host}/o/{token}"
        result = inject(copy.message, url, top=submission.decision.top)
        if not result.injected:
            # The reason is a property of the message, the same for every copy.
            submission.reason = result.reason
            for other in submission.copies:
                other.tracked = False
            return
        copy.message = result.message
        copy.tracked = True
    if submission.copies and all(copy.untracked_reason for copy in submission.copies):
        submission.reason = suppressions.REASON_SUPPRESSED


@dataclass(frozen=True)
class _Rendered:
    message: bytes
    links: int
    from_template: bool = False


@dataclass(frozen=True)
class _CopyRenderer:
    """The per-copy path for a message every copy shares: its links rewritten and its pixel injected,
    with the tokens one function gives. Used to plan the template (with probe tokens), to check it against
    a real copy, and for a copy whose tokens do not fit the template."""

    message: bytes
    domain: registry.Domain
    source: copies.TokenSource
    scheme: str
    opens: bool
    clicks: bool
    text_links: bool
    top: bool
    unsubscribes: bool = False

    def tokens_for(self, copy_id: bytes) -> splice.TokenFor:
        """One copy's tokens by key: ("open",) for its pixel, ("click", url) for a link."""
        return self.source.for_copy(copy_id)

    def render(self, token_for: splice.TokenFor) -> _Rendered | None:
        """The copy for these tokens; None where the per-copy path would not track it."""
        host, out, link_count = self.domain.tracking_host, self.message, 0
        if self.unsubscribes:
            out = _with_unsubscribe_links(out, self.domain, self.scheme, token_for).message
        if self.clicks:

            def link_url(url: str) -> str | None:
                token = token_for(("click", url))
                return None if token is None else f"{self.scheme}://{host}/c/{token}"

            result = links.rewrite(out, link_url, text=self.text_links, tracking_host=host)
            if result.reason is not None:
                return None
            out, link_count = result.message, result.links
        if self.opens:
            injected = inject(out, f"{self.scheme}://{host}/o/{token_for(('open',))}", top=self.top)
            if not injected.injected:
                return None
            out = injected.message
        return _Rendered(out, link_count)

    def render_message(self, token_for: splice.TokenFor) -> bytes | None:
        rendered = self.render(token_for)
        return None if rendered is None else rendered.message


def _track_by_template(
    submission: Submission, keyring: tokens.KeyRing, scheme: str, suppressed: frozenset[str]
) -> bool:
    """What track() does, for copies that share one message: plan the message once (splice.build) and
    make each copy by splicing its tokens into the template. False, with nothing changed, when this does
    not apply (per-recipient messages, few copies, a message the plan cannot cover exactly, or one that
    is not tracked at all): the per-copy path then does the work."""
    opens, clicks = submission.decision.opens, submission.clicks_tracked
    unsubscribes = submission.decision.unsubscribes
    tracked = [copy for copy in submission.copies if copy.recipient.lower() not in suppressed]
    if not (opens or clicks or unsubscribes) or len(tracked) < SPLICE_MIN_COPIES:
        return False
    message = tracked[0].message
    if any(copy.message is not message and copy.message != message for copy in tracked):
        return False  # recipient-variables: every copy is its own message
    source = copies.TokenSource(
        keyring,
        submission.domain.name,
        submission.privacy.anonymize_ip,
        submission.privacy.event_retention_days,
    )
    renderer = _CopyRenderer(
        message,
        submission.domain,
        source,
        scheme,
        opens=opens,
        clicks=clicks,
        text_links=submission.decision.clicks == options.CLICKS_YES,
        top=submission.decision.top,
        unsubscribes=unsubscribes,
    )
    if unsubscribes:
        # Whether the message can carry the link at all (signed content cannot): the same for every copy.
        probe = _with_unsubscribe_links(
            message, submission.domain, scheme, source.for_copy(bytes(tokens.COPY_ID_BYTES))
        )
        submission.unsubscribe_reason = probe.reason
    planned = _fill_template(renderer, tracked)
    if planned is None:
        return False
    template, made = planned
    for copy, rendered in zip(tracked, made, strict=True):
        copy.message, copy.links, copy.tracked = rendered.message, rendered.links if clicks else 0, opens
        copy.from_template = rendered.from_template
    submission.template = copies.encode_template(template, source)
    if opens:
        for copy in submission.copies:
            if copy.recipient.lower() in suppressed:  # the original links and no pixel
                copy.untracked_reason = suppressions.REASON_SUPPRESSED
    return True


def _fill_template(
    renderer: _CopyRenderer, tracked: list[Copy]
) -> tuple[splice.Template, list[_Rendered]] | None:
    """The template, and each tracked copy made from it; None (nothing made) where the template cannot be
    trusted for every copy: the per-copy path then does the whole message. A copy whose tokens do not fit
    the template is rendered on its own (and stored on its own)."""
    # A token's length depends on the URL and the domain's settings, never on the copy id.
    probe = renderer.tokens_for(bytes(tokens.COPY_ID_BYTES))
    planned = renderer.render(probe)
    template = splice.build(
        renderer.render_message, lambda key: None if (t := probe(key)) is None else len(t)
    )
    if template is None or planned is None:
        return None
    # Trust the template only once it has reproduced a real copy byte for byte.
    first_tokens = renderer.tokens_for(tracked[0].copy_id)
    first = template.fill([first_tokens(key) for key in template.keys])
    if first is None or renderer.render(first_tokens) != _Rendered(first, planned.links):
        logger.warning("copy template disagrees with the per-copy path; tracking copy by copy")
        return None
    made = [_Rendered(first, planned.links, from_template=True)]
    for copy in tracked[1:]:
        token_for = renderer.tokens_for(copy.copy_id)
        filled = template.fill([token_for(key) for key in template.keys])
        if filled is None:  # a token of another length than planned: this copy takes the per-copy path
            rendered = renderer.render(token_for)
            if rendered is None or rendered.links != planned.links:
                return None
            made.append(_Rendered(rendered.message, planned.links))
            continue
        made.append(_Rendered(filled, planned.links, from_template=True))
    return template, made


def _with_unsubscribe_links(
    message: bytes, domain: registry.Domain, scheme: str, token_for: splice.TokenFor
) -> unsubscribe.UnsubscribeResult:
    """The copy with its unsubscribe links on the tracking host: /u/{token}, the token sealing the copy and
    the scope (all mail, or the message's tags) as a click token does a URL."""

    def url_for(scope: str) -> str | None:
        token = token_for(("click", f"{unsubscribe.SEALED_PREFIX}{scope}"))
        return None if token is None else f"{scheme}://{domain.tracking_host}/u/{token}"

    return unsubscribe.add_links(
        message, url_for, html_footer=domain.html_footer, text_footer=domain.text_footer
    )


def _add_unsubscribe_links(
    submission: Submission, keyring: tokens.KeyRing, scheme: str, targets: list[Copy]
) -> None:
    """Each of these copies with its own unsubscribe links (the per-copy path)."""
    if not submission.decision.unsubscribes or not targets:
        return
    source = copies.TokenSource(
        keyring,
        submission.domain.name,
        submission.privacy.anonymize_ip,
        submission.privacy.event_retention_days,
    )
    for copy in targets:
        result = _with_unsubscribe_links(
            copy.message, submission.domain, scheme, source.for_copy(copy.copy_id)
        )
        if not result.linked:
            submission.unsubscribe_reason = result.reason  # a property of the message: the same for all
            return
        copy.message = result.message


def _rewrite_links(
    submission: Submission, keyring: tokens.KeyRing, scheme: str, suppressed: frozenset[str]
) -> None:
    """Each copy's links, sealed per copy with the domain's privacy instructions. A recipient on the
    tracking suppression list gets the original links: opting out of tracking covers clicks too."""
    domain = submission.domain
    text = submission.decision.clicks == options.CLICKS_YES
    for copy in submission.copies:
        if copy.recipient.lower() in suppressed:
            continue

        def link_url(url: str, copy_id: bytes = copy.copy_id) -> str | None:
            try:
                token = tokens.issue_click_token(
                    keyring,
                    copy_id,
                    domain.name,
                    url,
                    anonymize_ip=submission.privacy.anonymize_ip,
                    retention_days=submission.privacy.event_retention_days,
                )
            except ValueError:
                return None  # too long to seal: the link stays as it was
            return f"{scheme}://{domain.tracking_host}/c/{token}"

        result = links.rewrite(copy.message, link_url, text=text, tracking_host=domain.tracking_host)
        if result.reason is not None:
            # Signed or encrypted content is a property of the message: no copy is rewritten.
            submission.click_reason = result.reason
            for other in submission.copies:
                other.links = 0
            return
        copy.message = result.message
        copy.links = result.links


def _storage_prefix(submission_id: str, domain: str, now: datetime) -> str:
    return f"messages/{domain}/{now:%Y/%m/%d}/{submission_id}"


def store_submission(submission: Submission, settings: Settings) -> dict[str, Any]:
    """Write the copies to S3, then the copy and event records, then the message record that commits
    the submission. Any failure rolls back what was written and raises StorageUnavailable."""
    now = datetime.now(UTC)
    timestamp = now.timestamp()
    expires_at = (
        int(timestamp) + (submission.privacy.event_retention_days or settings.event_retention_days) * 86400
    )
    submission_id = uuid.uuid4().hex
    prefix = _storage_prefix(submission_id, submission.domain.name, now)
    # Store once: the copies made from the message's template share its one object (rendered when read,
    # messages.copies); every other copy is an object of its own.
    template_key = f"{prefix}/{TEMPLATE_NAME}"
    objects: list[tuple[str, bytes]] = []
    if submission.template is not None and any(copy.from_template for copy in submission.copies):
        objects.append((template_key, submission.template))
    for copy in submission.copies:
        if copy.from_template and submission.template is not None:
            copy.s3_key = template_key
        else:
            copy.s3_key = f"{prefix}/{copy.copy_hex}.eml"
            objects.append((copy.s3_key, copy.message))

    items = [
        record
        for copy in submission.copies
        for record in _copy_records(submission, copy, submission_id, timestamp, expires_at)
    ]
    message_item = _message_record(submission, submission_id, prefix, timestamp, expires_at)

    # S3 first, then the records in transactions of up to 100 items with the message record last: a
    # message with up to 49 recipients is committed by one all-or-nothing transaction. Whatever fails,
    # what was written is removed again; if even that fails (a full outage), the leftovers are records
    # with no message record, which nothing serves, and expire by TTL and the bucket lifecycle rule.
    try:
        written_keys = store.put_objects(settings.bucket_name, objects)
    except store.PartialWrite as exc:
        raise _rolled_back(settings, exc.written, []) from exc
    try:
        store.transact_put(settings.table_name, [*items, message_item])
    except store.PartialWrite as exc:
        raise _rolled_back(settings, written_keys, [item for chunk in exc.written for item in chunk]) from exc
    transport = jobs.transport_for(submission.domain.delivery_transport)
    if transport != "none" and not submission.testmode:
        # Queued once stored, so the sender always finds its copy; a message whose jobs cannot be queued
        # is not kept (the client retries the whole submission).
        try:
            jobs.enqueue([_send_job(submission, copy, transport) for copy in submission.copies])
        except StorageUnavailable as exc:
            raise _rolled_back(settings, written_keys, [*items, message_item]) from exc
    return {"submission_id": submission_id, "storage_prefix": prefix}


def _send_job(submission: Submission, copy: Copy, transport: str) -> jobs.SendJob:
    return jobs.SendJob(
        copy_pk=keys.copy_pk(copy.copy_hex),
        sender=submission.sender,
        from_header=submission.from_header or submission.sender,
        subject=submission.subject,
        size=len(copy.message),
        next_at=submission.deliver_at,
        transport=transport,
        require_tls=submission.require_tls,
        skip_verification=submission.skip_verification,
    )


def _copy_records(
    submission: Submission, copy: Copy, submission_id: str, timestamp: float, expires_at: int
) -> list[dict[str, Any]]:
    """One recipient's copy record and its `accepted` event, both in the copy's partition."""
    domain, bare_id = submission.domain.name, submission.message_id.strip("<>")
    common = {
        "submission_id": submission_id,
        "message_id": bare_id,
        "recipient": copy.recipient,
        "recipient_domain": copy.recipient.rpartition("@")[2].lower(),
        "tags": submission.tags,
        "user_variables": json.dumps(copy.user_variables),
    }
    copy_pk = keys.copy_pk(copy.copy_hex)
    copy_record = {
        **keys.copy_key(copy_pk),
        # the copies of one message, by recipient (diagnose)
        "gsi1pk": keys.copies_index_pk(domain, bare_id),
        "gsi1sk": copy.recipient.lower(),
        "type": "copy",
        "s3_key": copy.s3_key,
        "template": copy.from_template,  # s3_key is the message's template, shared: render to read
        "tracked": copy.tracked,
        "untracked_reason": copy.untracked_reason,
        "anonymize_ip": submission.privacy.anonymize_ip,
        # every copy of one recipient in a domain, for erasure (gsi2 holds keys only)
        "gsi2pk": erasure.recipient_key(domain, copy.recipient),
        "links": copy.links,
        "created_at": str(timestamp),
        "domain": domain,
        "expires_at": expires_at,
        # for the delivered and failed events' storage (the sender does not know this API's address)
        "storage_url": stored.storage(submission.api_base, domain, copy.copy_hex)["url"],
        **common,
    }
    accepted = records.event_record(
        copy_pk, _accepted_event(submission, copy, timestamp), domain=domain, expires_at=expires_at, **common
    )
    return [copy_record, accepted]


def _accepted_event(submission: Submission, copy: Copy, timestamp: float) -> dict[str, Any]:
    """Mailgun's `accepted` event for one recipient's copy."""
    return {
        "event": "accepted",
        "id": records.new_event_id(),
        "timestamp": timestamp,
        "log-level": "info",
        "method": "http",
        "recipient": copy.recipient,
        "recipient-domain": copy.recipient.rpartition("@")[2].lower(),
        "tags": submission.tags,
        "campaigns": [],  # Mailgun's retired campaigns: always empty, still in its event shape
        "user-variables": copy.user_variables,
        "envelope": {"sender": submission.sender, "targets": copy.recipient, "transport": "smtp"},
        "flags": {"is-test-mode": submission.testmode, "is-authenticated": True},
        "message": {
            "headers": {
                "to": _event_to(submission, copy),
                "message-id": submission.message_id.strip("<>"),
                "from": submission.from_header or submission.sender,
                "subject": submission.subject,
            },
            "attachments": submission.attachments,
            "recipients": [copy.recipient],
            "size": len(copy.message),
        },
        "storage": stored.storage(submission.api_base, submission.domain.name, copy.copy_hex),
    }


def _event_to(submission: Submission, copy: Copy) -> str:
    """The accepted event's To header. A To naming other recipients too is shown as this recipient's own
    address: an address must appear only in its own recipient's records, so that erasing it (and the
    retention limit) reaches every copy of it, and 1,000 recipients do not make 1,000 events of 1,000."""
    if copy.to_header is not None:
        return copy.to_header
    return submission.to_header if len(submission.recipients) == 1 else copy.recipient


def _message_record(
    submission: Submission, submission_id: str, prefix: str, timestamp: float, expires_at: int
) -> dict[str, Any]:
    """The record that commits the submission (written last): the message and how it was tracked."""
    bare_id = submission.message_id.strip("<>")
    return {
        "pk": keys.message_pk(submission_id),
        "sk": keys.MESSAGE_SK,
        "type": "message",
        "gsi1pk": keys.message_index_pk(submission.domain.name, bare_id),
        "gsi1sk": keys.MESSAGE_SK,
        "domain": submission.domain.name,
        "message_id": bare_id,
        "sender": submission.sender,
        "subject": submission.subject,
        "tags": submission.tags,
        "user_variables": json.dumps(submission.user_variables),
        "recipient_count": len(submission.copies),
        "opens_tracked": submission.opens_tracked,
        "tracking_source": submission.decision.source,
        "tracking_reason": submission.reason,
        "pixel_at_top": submission.decision.top,
        "clicks_tracked": submission.clicks_tracked,
        "click_mode": submission.decision.clicks,
        "click_source": submission.decision.clicks_source,
        "click_reason": submission.click_reason,
        "links": submission.links,
        "testmode": submission.testmode,
        "storage_prefix": prefix,
        "created_at": str(timestamp),
        "expires_at": expires_at,
    }


def _rolled_back(
    settings: Settings, object_keys: list[str], items: list[dict[str, Any]]
) -> StorageUnavailable:
    """Remove what a failed submission wrote; return the error for the client."""
    count(Metric.SUBMISSION_ROLLED_BACK)
    try:
        if object_keys:
            store.delete_objects(settings.bucket_name, object_keys)
    except (StorageUnavailable, *store.AWS_ERRORS) as exc:
        store.log_rollback_failure("s3", exc)
    try:
        if items:
            store.batch_delete(settings.table_name, [{"pk": i["pk"], "sk": i["sk"]} for i in items])
    except (StorageUnavailable, *store.AWS_ERRORS) as exc:
        store.log_rollback_failure("dynamodb", exc)
    return StorageUnavailable("The message could not be stored, nothing was kept; please retry")


def submit(form: Form, domain_name: str, settings: Settings, *, mime: bool, api_base: str) -> dict[str, Any]:
    """The whole submission; returns Mailgun's response body plus `tracking`."""
    started = time.perf_counter()
    domain = registry.get(domain_name)
    submission = plan(form, domain, mime=mime)
    submission.api_base = api_base
    submission.privacy = policy.get(domain.name)
    if submission.decision.opens or submission.clicks_tracked:
        suppressed = (
            suppressions.suppressed_among(domain.name, submission.recipients)
            if domain.tracking_ready
            else frozenset()
        )
        track(
            submission,
            tokens.load_keyring(settings.token_secret_name),
            settings.tracking_scheme,
            suppressed=suppressed,
        )
    store_submission(submission, settings)

    count(Metric.MESSAGES_ACCEPTED)
    count(Metric.COPIES_STORED, len(submission.copies))
    suppressed_copies = sum(1 for copy in submission.copies if copy.untracked_reason)
    if submission.opens_tracked:
        count(Metric.COPIES_TRACKED, len(submission.copies) - suppressed_copies)
    if suppressed_copies:
        count(Metric.COPIES_SUPPRESSED, suppressed_copies)
    logger.info(
        "message accepted",
        extra={
            "copies": len(submission.copies),
            "opens_tracked": submission.opens_tracked,
            "tracking_source": submission.decision.source,
            "tracking_reason": submission.reason,
            "clicks_tracked": submission.clicks_tracked,
            "links": submission.links,
            "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )
    tracking: dict[str, Any] = {
        "opens": submission.opens_tracked,
        "reason": submission.reason,
        "detail": reason_text(submission.reason) if submission.reason else None,
        # opentracking's addition for clicks: the mode, links rewritten per copy, or why not
        "clicks": {
            "mode": submission.decision.clicks if submission.clicks_tracked else options.CLICKS_NO,
            "links": submission.links,
            "reason": submission.click_reason,
            "detail": reason_text(submission.click_reason) if submission.click_reason else None,
        },
        # opentracking's addition for unsubscribe links: whether copies carry them, or why not
        "unsubscribes": {
            "active": submission.decision.unsubscribes and submission.unsubscribe_reason is None,
            "reason": submission.unsubscribe_reason,
            "detail": reason_text(submission.unsubscribe_reason) if submission.unsubscribe_reason else None,
        },
    }
    if suppressed_copies:
        tracking["suppressed"] = suppressed_copies  # copies without a pixel: their recipients opted out
    return {"id": submission.message_id, "message": QUEUED, "tracking": tracking}
