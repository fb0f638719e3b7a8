"""Unsubscribe links in a copy, as Mailgun's unsubscribe tracking adds them.

`%unsubscribe_url%` (all mail of the domain) and `%tag_unsubscribe_url%` (the message's tags) in the
displayed HTML and plain-text parts become the copy's signed unsubscribe links. A message with neither gets
the domain's footers instead: the HTML footer where the pixel would go (before the real `</body>`), the
text footer at the end of each inline plain-text part. Then, unless the message has its own, the
`List-Unsubscribe` and `List-Unsubscribe-Post: List-Unsubscribe=One-Click` headers (RFC 8058, which
large mailbox providers require of bulk senders) are put at the top of the header block.

The injector's byte rules hold: each edited part keeps its charset, transfer encoding and line endings
(mail.links.edit_bodies re-encodes only what changed); nothing outside the edited bodies and the added
header lines changes; signed, encrypted and DKIM-signed messages are left alone. A 7bit/8bit line that
an edit would take past 998 octets is not edited.
"""

from __future__ import annotations

import html as _html
import re
from collections.abc import Callable
from dataclasses import dataclass

from opentracking.mail import injection, links
from opentracking.mail.mime import body_charset, mask_shifted, resolve_unicode

ALL = "all"
TAG = "tag"
# What an unsubscribe token seals where a click token seals its URL: never an http(s) URL, so the click
# redirect refuses it, and the unsubscribe page refuses a click token.
SEALED_PREFIX = "unsubscribe:"
PLACEHOLDERS = {"%unsubscribe_url%": ALL, "%tag_unsubscribe_url%": TAG}
_PLACEHOLDER = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS))
_LINE_LIMIT = 998
_HEADER_BLOCK_END = re.compile(rb"\r?\n\r?\n")
_LIST_UNSUBSCRIBE = re.compile(rb"(?im)^list-unsubscribe[ \t]*:")
REASON_NO_PART = "no-displayed-part"  # nothing in the message a reader sees could carry the link
REASON_TEXT = {
    REASON_NO_PART: "The message has no HTML or plain-text part a reader sees (or none that can be edited "
    "safely): it carries no unsubscribe link.",
}

UrlFor = Callable[[str], "str | None"]  # ALL or TAG -> the copy's unsubscribe URL


@dataclass(frozen=True)
class UnsubscribeResult:
    message: bytes
    linked: bool  # the copy carries an unsubscribe link (a placeholder replaced, or a footer added)
    reason: str | None = None  # why not, when it does not


def _substitute(text: str, urls: dict[str, str], html: bool) -> tuple[str, int]:
    count = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal count
        url = urls.get(match.group(0))
        if url is None:
            return match.group(0)
        count += 1
        return _html.escape(url, quote=True) if html else url

    return _PLACEHOLDER.sub(replace, text), count


def _longest_line(data: bytes) -> int:
    return max((len(line.rstrip(b"\r")) for line in data.split(b"\n")), default=0)


@dataclass(frozen=True)
class _Edit:
    """One pass over the bodies: placeholders replaced, or (footer pass) the footers added."""

    urls: dict[str, str]
    html_footer: str | None = None
    text_footer: str | None = None
    eol: str = "\r\n"  # the message's line ending, for a body with none of its own

    def __call__(
        self, decoded: bytes, charset: str | None, html: bool, line_limit: bool
    ) -> links.Edited | None:
        editable = body_charset(decoded, charset)
        if editable is None:
            return None
        kind, name = editable
        footer = self.html_footer if html else self.text_footer
        if kind == "text":  # UTF-16/32: edited as text, only where it round-trips
            assert name is not None
            codec, bom = resolve_unicode(decoded, name)
            try:
                text = decoded[bom:].decode(codec)
                if text.encode(codec) != decoded[bom:]:
                    return None
                new_text, count = self._edit_text(text, html, footer)
                return decoded[:bom] + new_text.encode(codec), count
            except (UnicodeError, LookupError, ValueError):
                return None
        edited = self._edit_bytes(decoded, charset, html, footer, stateful=kind == "stateful")
        if edited is None or not edited[1]:
            return edited
        if line_limit and _longest_line(edited[0]) > _LINE_LIMIT >= _longest_line(decoded):
            return None
        return edited

    def _edit_text(self, text: str, html: bool, footer: str | None) -> tuple[str, int]:
        if footer is None:
            return _substitute(text, self.urls, html)
        eol = "\r\n" if "\r\n" in text else "\n" if "\n" in text else self.eol
        markup = _substitute(footer, self.urls, html)[0].replace("\r\n", "\n").replace("\n", eol)
        if html:
            index = injection.insertion_index(text)
            return text[:index] + markup + text[index:], 1
        return text + markup, 1

    def _edit_bytes(
        self, decoded: bytes, charset: str | None, html: bool, footer: str | None, *, stateful: bool
    ) -> links.Edited | None:
        codec = links.codec_for(charset)
        if footer is None:
            # The placeholders are ASCII, and so are the URLs: found and replaced as bytes, so unknown
            # charsets survive (in ISO-2022, never inside a double-byte run).
            masked, runs = mask_shifted(decoded) if stateful else (decoded, [])
            out, last, count = [], 0, 0
            for match in _PLACEHOLDER.finditer(masked.decode("latin-1")):
                url = self.urls.get(match.group(0))
                if url is None or any(a < match.end() and match.start() < b for a, b in runs):
                    continue
                out += [
                    decoded[last : match.start()],
                    (_html.escape(url, quote=True) if html else url).encode(),
                ]
                last, count = match.end(), count + 1
            out.append(decoded[last:])
            return b"".join(out), count
        eol = b"\r\n" if b"\r\n" in decoded else b"\n" if b"\n" in decoded else self.eol.encode()
        text = _substitute(footer, self.urls, html)[0].replace("\r\n", "\n")
        try:
            markup = text.encode(codec).replace(b"\n", eol)
        except UnicodeEncodeError:
            return None  # a footer the part's charset cannot carry
        if stateful and not markup.isascii():
            return None
        if not html:
            return decoded + markup, 1
        masked, runs = mask_shifted(decoded) if stateful else (decoded, [])
        offset = injection.insertion_offset(masked)
        if any(a <= offset < b for a, b in runs):
            return None
        return decoded[:offset] + markup + decoded[offset:], 1


def _with_headers(message: bytes, url: str) -> bytes:
    """RFC 8058's two headers at the top of the header block, unless it has a List-Unsubscribe already."""
    block = _HEADER_BLOCK_END.search(message)
    if _LIST_UNSUBSCRIBE.search(message, 0, block.start() if block else len(message)):
        return message
    eol = b"\r\n" if (block and message[block.start() : block.start() + 1] == b"\r") else b"\n"
    lines = (
        f"List-Unsubscribe: <{url}>".encode()
        + eol
        + b"List-Unsubscribe-Post: List-Unsubscribe=One-Click"
        + eol
    )
    return lines + message


def add_links(message: bytes, url_for: UrlFor, *, html_footer: str, text_footer: str) -> UnsubscribeResult:
    """The copy with its unsubscribe links: its placeholders replaced, or else the footers added; and the
    one-click headers. `url_for(ALL)` / `url_for(TAG)` give the copy's links (None: that one cannot be
    made, and its placeholder stays)."""
    urls = {placeholder: url for placeholder, scope in PLACEHOLDERS.items() if (url := url_for(scope))}
    replaced = links.edit_bodies(message, _Edit(urls), text=True)
    if replaced.reason is not None and replaced.reason != injection.UNDECODABLE:
        return UnsubscribeResult(message, False, replaced.reason)  # signed, encrypted or DKIM-signed
    out = replaced.message
    if not replaced.links:
        eol = "\r\n" if b"\r\n" in message else "\n"
        footed = links.edit_bodies(out, _Edit(urls, html_footer, text_footer, eol), text=True)
        if not footed.links:
            return UnsubscribeResult(message, False, footed.reason or REASON_NO_PART)
        out = footed.message
    one_click = urls.get("%unsubscribe_url%")
    return UnsubscribeResult(_with_headers(out, one_click) if one_click else out, True)
