"""Building the message a sender described, and preparing a raw MIME message for delivery.

Form submissions become a proper MIME tree (text/html alternative, related inline parts, attachments,
h: headers, a Message-Id on the sending domain). Raw MIME keeps every byte except the control headers
(X-Mailgun-*, Bcc) that are consumed, not delivered, and a Message-Id added when it has none.
"""

from __future__ import annotations

import json
import mimetypes
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import getaddresses

from opentracking.core.errors import BadRequest
from opentracking.http.forms import Form, UploadedFile

CONTROL_HEADER_PREFIX = "x-mailgun-"
# Headers an MTA never delivers (Bcc) or that opentracking consumes.
_CONSUMED = frozenset({"bcc"})
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_FIELD_START = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.MULTILINE)
_MESSAGE_ID = re.compile(r"<[^<>\s]+@[^<>\s]+>")
# Any key of a recipient's JSON object: `v:cust` and `h:List-Unsubscribe` (keys a framework's Mailgun
# backend sends) as much as `first name`. A key holding "%" cannot end at the first "%", so it is replaced
# literally (substitute()).
_RECIPIENT_VARIABLE = re.compile(r"%recipient\.([^%]+)%")
# RFC 5321 4.5.3.1: a local part of at most 64 octets, a path of at most 256 (254 for the address itself).
MAX_LOCAL_PART_OCTETS = 64
MAX_ADDRESS_OCTETS = 254
# What may not appear in a header field's value: every character str.splitlines() breaks at (a line break to
# the email package, and to many mail programs: CR, LF, VT, FF, FS, GS, RS, NEL, U+2028, U+2029) and the
# other controls RFC 5322 leaves out of field bodies (all of C0 but HTAB, and DEL).
_HEADER_BREAKING = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")


def new_message_id(domain: str, now: datetime | None = None) -> str:
    """A Mailgun-style id: <YYYYMMDDhhmmss.random@domain>."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    return f"<{stamp}.{secrets.token_hex(8)}@{domain}>"


def parse_recipients(values: list[str], field_name: str) -> list[str]:
    """Addresses from repeated and comma-separated fields, validated, de-duplicated case-insensitively."""
    addresses: list[str] = []
    seen: set[str] = set()
    for _name, address in getaddresses(values):
        address = address.strip()
        if not address:
            continue
        local, sep, domain = address.rpartition("@")
        if (
            not sep
            or not local
            or "." not in domain
            or any(c.isspace() for c in address)
            or _HEADER_BREAKING.search(address)
            or len(local.encode()) > MAX_LOCAL_PART_OCTETS
            or len(address.encode()) > MAX_ADDRESS_OCTETS
        ):
            raise BadRequest(f"'{field_name}' parameter is not a valid address. please check documentation")
        if address.lower() not in seen:
            seen.add(address.lower())
            addresses.append(address)
    # getaddresses silently drops garbage such as "foo"; a field that had text but no address is bad input.
    if any(value.strip() for value in values) and not addresses:
        raise BadRequest(f"'{field_name}' parameter is not a valid address. please check documentation")
    return addresses


def substitute(text: str, variables: Mapping[str, object]) -> str:
    """Replace %recipient.key% with the recipient's variable (Mailgun batch sending); unknown keys stay."""
    if "%recipient." not in text:
        return text

    def rendered(value: object) -> str:
        # A number, boolean or object as JSON writes it (true, not True), as Mailgun renders its JSON values.
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    for key in (key for key in variables if "%" in key):
        if variables[key] is not None:
            text = text.replace(f"%recipient.{key}%", rendered(variables[key]))

    def replace(match: re.Match[str]) -> str:
        value = variables.get(match.group(1))
        return match.group(0) if value is None else rendered(value)

    return _RECIPIENT_VARIABLE.sub(replace, text)


@dataclass(frozen=True)
class MessageParts:
    """What a form submission describes, before per-recipient substitution."""

    sender: str
    message_id: str | None  # the sender's own h:Message-Id, which then names the message
    to_header: list[str]
    cc_header: list[str]
    subject: str
    text: str | None
    html: str | None
    amp_html: str | None
    headers: list[tuple[str, str]]  # h: headers that are delivered (control headers removed)
    attachments: list[UploadedFile]
    inline: list[UploadedFile]


def parts_from_form(form: Form) -> MessageParts:
    sender = form.last("from")
    if not sender or not sender.strip():
        raise BadRequest("'from' parameter is missing")
    if not any(address for _name, address in getaddresses([sender])):
        raise BadRequest("'from' parameter is not a valid address. please check documentation")
    text, html, amp_html = form.last("text"), form.last("html"), form.last("amp-html")
    if not (text or html or amp_html):
        if form.last("template"):
            raise BadRequest("'template' is not supported: send 'text' and/or 'html'")
        raise BadRequest("Need at least one of 'text', 'html', 'amp-html' or 'template' parameters specified")
    headers = [(name, value) for name, value in form.with_prefix("h:") if not _is_consumed_header(name)]
    for name, _ in headers:
        if not re.fullmatch(r"[!-9;-~]+", name):
            raise BadRequest(f"'h:{name}' is not a valid header")
    # Header values are checked where they are written, after substitution (build_message).
    custom_ids = [value.strip() for name, value in headers if name.lower() == "message-id"]
    if len(custom_ids) > 1:
        raise BadRequest("'h:Message-Id' parameter may be given once")
    if custom_ids and not _MESSAGE_ID.fullmatch(custom_ids[0]):
        raise BadRequest("'h:Message-Id' parameter must look like <local-part@domain>")
    return MessageParts(
        sender=sender.strip(),
        message_id=custom_ids[0] if custom_ids else None,
        to_header=form.all("to"),
        cc_header=form.all("cc"),
        subject=form.last("subject") or "",
        text=text or None,
        html=html or None,
        amp_html=amp_html or None,
        headers=headers,
        attachments=form.files_named("attachment"),
        inline=form.files_named("inline"),
    )


def _set_header(msg: EmailMessage, field_name: str, header: str, value: str) -> None:
    """One header on the message being built. What the sender or a recipient variable put in it is checked
    here, after substitution: a line break in any of its spellings would break out of the field, and no
    other control belongs in one; nothing reaches the email package that it would refuse."""
    if _HEADER_BREAKING.search(value):
        raise BadRequest(f"'{field_name}' parameter must not contain line breaks or control characters")
    try:
        msg[header] = value
    except ValueError as exc:  # e.g. a second Message-Id or Date: the email package allows only one
        raise BadRequest(f"'{field_name}' parameter is not valid: {exc}") from None


def _is_consumed_header(name: str) -> bool:
    lowered = name.strip().lower()
    return lowered.startswith(CONTROL_HEADER_PREFIX) or lowered in _CONSUMED


def content_type_of(upload: UploadedFile) -> str:
    """The type an attachment is sent as: the one uploaded, else guessed from its name."""
    maintype, subtype = _maintype_subtype(upload)
    return f"{maintype}/{subtype}"


def _maintype_subtype(upload: UploadedFile) -> tuple[str, str]:
    content_type = (
        upload.content_type or mimetypes.guess_type(upload.filename)[0] or "application/octet-stream"
    )
    maintype, _, subtype = content_type.partition(";")[0].strip().lower().partition("/")
    if not maintype or not subtype:
        return "application", "octet-stream"
    return maintype, subtype


def build_message(
    parts: MessageParts,
    message_id: str,
    variables: Mapping[str, object] | None = None,
    to_override: list[str] | None = None,
) -> bytes:
    """One MIME message (CRLF, RFC 5322) for the parts, with %recipient.x% substituted from `variables`.
    `to_override` replaces the To header (batch sending shows each recipient only their own address)."""
    variables = variables or {}
    msg = EmailMessage(policy=SMTP)
    _set_header(msg, "from", "From", parts.sender)
    to_values = to_override if to_override is not None else parts.to_header
    if to_values:
        _set_header(msg, "to", "To", ", ".join(to_values))
    if parts.cc_header and to_override is None:
        _set_header(msg, "cc", "Cc", ", ".join(parts.cc_header))
    _set_header(msg, "subject", "Subject", substitute(parts.subject, variables))
    # The sender's own Message-Id or Date (an h: header) replaces ours; either may appear only once.
    given = {name.lower() for name, _ in parts.headers}
    if "message-id" not in given:
        msg["Message-Id"] = message_id
    if "date" not in given:
        msg["Date"] = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    for name, value in parts.headers:
        _set_header(msg, f"h:{name}", name, substitute(value, variables))

    text = substitute(parts.text, variables) if parts.text else None
    html = substitute(parts.html, variables) if parts.html else None
    amp_html = substitute(parts.amp_html, variables) if parts.amp_html else None
    bodies = [
        (body, subtype)
        for body, subtype in ((text, "plain"), (amp_html, "x-amp-html"), (html, "html"))
        if body
    ]
    # A client shows the last alternative it understands, so HTML goes last.
    first, first_subtype = bodies[0]
    msg.set_content(first, subtype=first_subtype, cte=_cte_for(first))
    for body, subtype in bodies[1:]:
        msg.add_alternative(body, subtype=subtype, cte=_cte_for(body))

    if parts.inline:
        html_part = _html_part(msg)
        if html_part is None:
            # No HTML to reference them: inline files travel as attachments, as Mailgun does.
            for upload in parts.inline:
                _attach(msg, upload, disposition="inline")
        else:
            for upload in parts.inline:
                maintype, subtype = _maintype_subtype(upload)
                html_part.add_related(
                    upload.data,
                    maintype=maintype,
                    subtype=subtype,
                    cid=f"<{upload.filename}>",
                    filename=upload.filename,
                    disposition="inline",
                )
    for upload in parts.attachments:
        _attach(msg, upload, disposition="attachment")
    return msg.as_bytes()


def _cte_for(body: str) -> str:
    # quoted-printable keeps long HTML lines under the 998-octet limit; plain ASCII short lines stay 7bit.
    if body.isascii() and all(len(line) <= 998 for line in body.splitlines()):
        return "7bit"
    return "quoted-printable"


def _html_part(msg: EmailMessage) -> EmailMessage | None:
    for part in msg.walk():
        if part.get_content_type() == "text/html":
            return part
    return None


def _attach(msg: EmailMessage, upload: UploadedFile, *, disposition: str) -> None:
    maintype, subtype = _maintype_subtype(upload)
    msg.add_attachment(
        upload.data, maintype=maintype, subtype=subtype, filename=upload.filename, disposition=disposition
    )


@dataclass(frozen=True)
class PreparedMime:
    message: bytes  # control headers removed, Message-Id guaranteed
    message_id: str
    control_headers: list[tuple[str, str]]  # consumed X-Mailgun-* headers (lower-case name, unfolded value)
    sender: str
    subject: str
    to: str = ""  # the To header as written (unfolded), for the events


def prepare_mime(raw: bytes, domain: str) -> PreparedMime:
    """Strip consumed headers from the top-level header block, byte for byte, and add a Message-Id if
    missing. Nothing below the header block is touched."""
    if not raw.strip():
        raise BadRequest("'message' parameter is missing or empty")
    end = _HEADER_END.search(raw)
    # The header block keeps its last line ending; `rest` starts with the empty line that ends it.
    split = (end.start() + (2 if raw[end.start() : end.start() + 1] == b"\r" else 1)) if end else len(raw)
    header_block, rest = raw[:split], raw[split:]
    newline = b"\r\n" if b"\r\n" in header_block else b"\n"

    starts = [m.start() for m in _FIELD_START.finditer(header_block)]
    if not starts:
        raise BadRequest("'message' is not a MIME message: it has no header fields")
    kept: list[bytes] = [header_block[: starts[0]]]
    control: list[tuple[str, str]] = []
    fields: dict[str, str] = {}
    for index, start in enumerate(starts):
        stop = starts[index + 1] if index + 1 < len(starts) else len(header_block)
        field = header_block[start:stop]
        name, _, value = field.partition(b":")
        lowered = name.strip().decode("ascii", "replace").lower()
        unfolded = re.sub(rb"\r?\n[ \t]+", b" ", value).strip().decode("utf-8", "replace")
        fields.setdefault(lowered, unfolded)
        if _is_consumed_header(lowered):
            if lowered.startswith(CONTROL_HEADER_PREFIX):
                control.append((lowered, unfolded))
            continue
        kept.append(field)

    message_id = fields.get("message-id", "").strip()
    prefix = b""
    if not _MESSAGE_ID.fullmatch(message_id):
        message_id = new_message_id(domain)
        prefix = b"Message-Id: " + message_id.encode() + newline
    return PreparedMime(
        message=prefix + b"".join(kept) + rest,
        message_id=message_id,
        control_headers=control,
        sender=fields.get("from", ""),
        subject=fields.get("subject", ""),
        to=fields.get("to", ""),
    )


def sender_address(sender: str) -> str:
    parsed = [address for _name, address in getaddresses([sender]) if address]
    return parsed[0] if parsed else sender
