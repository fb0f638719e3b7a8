"""Stored messages through Mailgun's message-storage API: each accepted event's `storage` names its copy
(`key`, the copy's id, and `url`), and `GET` on that URL returns the copy as it was sent, for as long as the
copy is kept (EventRetentionDays): as Mailgun's parsed JSON, or with `Accept: message/rfc2822` its MIME in
`body-mime`. Its attachments (and inline parts) are read at `url/attachments/{n}`. A copy is only found
through its own domain; an unknown, expired or malformed key is a 404."""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from email.message import EmailMessage, MIMEPart
from email.utils import getaddresses
from typing import Any

from opentracking.core.config import table_name
from opentracking.core.errors import NotFound
from opentracking.messages import copies
from opentracking.storage import keys, store

_KEY = re.compile(r"[0-9a-f]{32}")


def storage(api_base: str, domain: str, copy_hex: str) -> dict[str, str]:
    """An accepted event's `storage` object."""
    return {"key": copy_hex, "url": f"{api_base}/v3/domains/{domain}/messages/{copy_hex}"}


def _message(domain: str, key: str) -> tuple[dict[str, Any], EmailMessage]:
    copy = (
        store.get_item(table_name(), {"pk": keys.copy_pk(key), "sk": keys.COPY_SK})
        if _KEY.fullmatch(key)
        else None
    )
    if copy is None or copy.get("domain") != domain:
        raise NotFound("Message not found")
    try:
        data = copies.read(copy)
    except store.ObjectMissing:
        raise NotFound("Message not found") from None
    return copy, message_from_bytes(data, policy=policy.default)


def _text(message: EmailMessage, subtype: str) -> str:
    part = message.get_body((subtype,))
    if part is None:
        return ""
    try:
        return str(part.get_content())
    except (LookupError, ValueError):  # an unknown charset: the bytes as they are
        return _bytes(part).decode("utf-8", "replace")


def _files(message: EmailMessage) -> list[EmailMessage]:
    """Attachments and inline parts (those with a Content-ID), in order: what `attachments/{n}` counts."""
    bodies = [message.get_body(("html",)), message.get_body(("plain",))]
    found = []
    for part in message.walk():
        if part.is_multipart() or any(part is body for body in bodies if body is not None):
            continue
        if part.get_filename() or part.get("Content-ID") or part.get_content_disposition() == "attachment":
            found.append(part)
    return found


def retrieve(domain: str, key: str, *, api_base: str, raw: bool) -> dict[str, Any]:
    copy, message = _message(domain, key)
    sender = next((address for _name, address in getaddresses([str(message.get("From", ""))]) if address), "")
    common = {
        "recipients": copy["recipient"],
        "sender": sender,
        "from": str(message.get("From", "")),
        "subject": str(message.get("Subject", "")),
    }
    if raw:
        return {**common, "body-mime": message.as_bytes(policy=policy.SMTP).decode("utf-8", "replace")}
    url = f"{api_base}/v3/domains/{domain}/messages/{key}"
    attachments, content_ids = [], {}
    for index, part in enumerate(_files(message)):
        described = {
            "url": f"{url}/attachments/{index}",
            "content-type": part.get_content_type(),
            "name": part.get_filename() or "",
            "size": len(_bytes(part)),
        }
        content_id = str(part.get("Content-ID", "")).strip()
        if content_id and part.get_content_disposition() != "attachment":
            content_ids[content_id] = described
        else:
            attachments.append(described)
    html, plain = _text(message, "html"), _text(message, "plain")
    return {
        **common,
        "body-plain": plain,
        "body-html": html,
        # Mailgun strips quoted replies and signatures from mail it receives; a copy it sends has none.
        "stripped-text": plain,
        "stripped-html": html,
        "stripped-signature": "",
        "message-headers": [[name, str(value)] for name, value in message.items()],
        "attachments": attachments,
        "content-id-map": content_ids,
        "message-url": url,
    }


def attachment(domain: str, key: str, index: str) -> tuple[str, str, bytes]:
    """One attachment or inline part: its content type, file name and bytes."""
    _copy, message = _message(domain, key)
    files = _files(message)
    if not (index.isascii() and index.isdigit()) or int(index) >= len(files):
        raise NotFound("Attachment not found")
    part = files[int(index)]
    return part.get_content_type(), part.get_filename() or "", _bytes(part)


def _bytes(part: MIMEPart) -> bytes:
    """A part's content, its transfer encoding undone."""
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""
