"""Byte-preserving click-tracking link rewriting in MIME messages.

Each tracked link's URL is replaced by a redirect on the tracking host; nothing else changes. The rules
are the injector's (DESIGN 3.3), and so is the MIME walker, so both agree on which parts a client shows:

- only ``href`` values change (HTML) or the URLs themselves (plain text): every other byte of the
  message is kept, and each rewritten part keeps its charset, Content-Transfer-Encoding and line endings;
- signed, encrypted and DKIM-signed messages are never touched (the reason is reported instead);
- rewritten: ``http``/``https`` links of ``<a>`` and ``<area>`` in every HTML part a client shows (and
  VML shapes such as ``<v:roundrect href>`` inside Outlook conditional comments, which Outlook renders);
  with ``text=True`` also the URLs of every inline ``text/plain`` part;
- left alone: ``mailto:``, ``tel:``, in-page anchors, relative and other schemes, links inside
  ``<script>``/``<style>``/ordinary comments, the unsubscribe link (Mailgun's ``%unsubscribe_url%``
  family, or any target of the message's ``List-Unsubscribe`` header), links already on the tracking
  host, URLs longer than a click token can seal, and links marked not to be tracked;
- the do-not-track markers on an ``<a>``/``<area>``: ``disable-tracking="true"`` (any value but
  ``false``/``no``), ``clicktracking="off"`` (SendGrid's spelling, so moved templates keep working) and
  ``data-no-track``. The marker stays in the markup.

The URL a link is sealed with is the one a browser would follow: the attribute value with character
references decoded (HTML's attribute rules), surrounding whitespace and embedded tabs/newlines removed.

Public API::

    rewrite(message: bytes, link_url, *, text=False, tracking_host="") -> RewriteResult
    rewrite_html(html: str, link_url, *, tracking_host="") -> tuple[str, int]
    rewrite_text(text: str, link_url, *, tracking_host="") -> tuple[str, int]

``link_url(original_url) -> str | None`` gives the replacement (None: leave this link alone).
"""

from __future__ import annotations

import binascii
import codecs
import functools
import html as _html
import re
from collections.abc import Callable
from dataclasses import dataclass
from html.entities import html5 as _HTML5_ENTITIES
from urllib.parse import urlsplit

# The MIME walker and the charset rules are shared with the injector on purpose: one definition of "the
# parts a client shows" and of "which charsets can be edited as bytes".
from opentracking.mail.injection import DKIM_SIGNED, ENCRYPTED, SIGNED, UNDECODABLE
from opentracking.mail.mime import (
    BLANK_LINE,
    DKIM_FIELD,
    Part,
    body_charset,
    candidates,
    decode_base64_body,
    is_attachment,
    mask_shifted,
    parse_part,
    resolve_unicode,
)

__all__ = ["RewriteResult", "rewrite", "rewrite_html", "rewrite_text"]

LinkUrl = Callable[[str], "str | None"]


@dataclass(frozen=True)
class RewriteResult:
    """Outcome of :func:`rewrite`; ``message`` is the input unchanged when ``links`` is 0."""

    message: bytes
    links: int  # how many links now point at the tracking host
    reason: str | None = None  # why nothing could be rewritten (signed, encrypted, dkim-signed, ...)


# --------------------------------------------------------------------------------------
# Which URLs are tracked
# --------------------------------------------------------------------------------------

# Mailgun's unsubscribe placeholders: %unsubscribe_url%, %tag_unsubscribe_url%,
# %mailing_list_unsubscribe_url% (in raw or percent-encoded form).
_UNSUBSCRIBE_PLACEHOLDER = re.compile(r"%(?:25)?[a-z_]*unsubscribe_url%", re.I)
_URL_WHITESPACE = re.compile(r"[\t\n\r]")


def _trackable(url: str, skip: frozenset[str], tracking_host: str) -> bool:
    lowered = url.lower()
    if not (lowered.startswith("http://") or lowered.startswith("https://")):
        return False  # mailto:, tel:, #anchor, relative, javascript:, ...
    if _UNSUBSCRIBE_PLACEHOLDER.search(url) or url in skip:
        return False
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:  # an invalid port or IPv6 literal: a browser would not follow it either
        return False
    return bool(host) and host != tracking_host


def list_unsubscribe_targets(message: bytes) -> frozenset[str]:
    """The URLs in the top-level List-Unsubscribe header(s): those links are the unsubscribe link."""
    blank = BLANK_LINE.search(message)
    header = message[: blank.start() if blank else len(message)]
    targets: set[str] = set()
    for m in re.finditer(rb"^list-unsubscribe[ \t]*:((?:[^\r\n]|\r?\n[ \t])*)", header, re.I | re.M):
        value = re.sub(rb"\r?\n", b"", m.group(1)).decode("latin-1")
        targets.update(t.strip() for t in re.findall(r"<([^<>]*)>", value))
    return frozenset(targets)


# --------------------------------------------------------------------------------------
# HTML: find the href values of links
# --------------------------------------------------------------------------------------

_RAWTEXT = frozenset({b"script", b"style", b"title", b"textarea", b"xmp", b"iframe", b"noembed", b"noframes"})
_LINK_TAGS = frozenset({b"a", b"area"})
_TAG_NAME = re.compile(rb"[a-z][^\s/>]*+")
# One attribute per the HTML tokenizer: names run until whitespace, "/", ">" or "="; quotes only
# delimit a value directly after "=".
_ATTRIBUTE = re.compile(
    rb"""[\s/]*+(?P<name>[^\s/>][^\s/>=]*+)(?:\s*+=\s*+(?:"(?P<dq>[^"]*+)"|'(?P<sq>[^']*+)'|(?P<uq>[^\s>]*+)))?"""
)
_TAG_REST = re.compile(rb"[\s/]*+>")
# The same tokenization in one possessive match, for the tags whose attributes do not matter: their end.
_SKIP_ATTRIBUTES = re.compile(
    rb"""(?:[\s/]++|[^\s/>][^\s/>=]*+(?:\s*+=\s*+(?:"[^"]*+"|'[^']*+'|[^\s>]*+))?)*+>"""
)
_CONDITIONAL_START = re.compile(rb"<!--\[if[^\]]*\]>")
_COMMENT_END = re.compile(rb"--!?>")


@dataclass(frozen=True)
class _Href:
    start: int  # the value's offsets (inside the quotes)
    end: int


def _tag_hrefs(lower: bytes, pos: int, end: int, *, vml: bool) -> tuple[int, _Href | None]:
    """Parse the start tag at *pos* (its name already seen); return (where scanning goes on, its href)."""
    name_match = _TAG_NAME.match(lower, pos + 1, end)
    assert name_match is not None
    name = name_match.group()
    cursor = name_match.end()
    if name not in _LINK_TAGS and not (vml and name.startswith(b"v:")):
        skipped = _SKIP_ATTRIBUTES.match(lower, cursor, end)
        if skipped is None:
            return end, None  # cut off by the end of input: not a tag
        if name in _RAWTEXT:  # script, style, ...: text up to the matching end tag
            close = re.compile(rb"</" + re.escape(name) + rb"(?=[\s/>])").search(lower, skipped.end(), end)
            return (close.start() if close else end), None
        return skipped.end(), None
    attributes: dict[bytes, tuple[int, int, bytes | None]] = {}
    while True:
        end_match = _TAG_REST.match(lower, cursor, end)
        if end_match is not None:
            cursor = end_match.end()
            break
        m = _ATTRIBUTE.match(lower, cursor, end)
        if m is None or m.end() == cursor or m.end() == end:
            return end, None  # cut off by the end of input: not a tag
        for group in ("dq", "sq", "uq"):
            if m.group(group) is not None:
                span = (m.start(group), m.end(group), m.group(group))
                break
        else:
            span = (m.end(), m.end(), None)
        attributes.setdefault(m.group("name"), span)  # the first occurrence wins, as in browsers
        cursor = m.end()
    if b"href" not in attributes or _marked_untracked(attributes):
        return cursor, None
    start, stop, _value = attributes[b"href"]
    return cursor, _Href(start, stop)


def _marked_untracked(attributes: dict[bytes, tuple[int, int, bytes | None]]) -> bool:
    def value(name: bytes) -> bytes | None:
        found = attributes.get(name)
        return None if found is None else (found[2] or b"").strip()

    disable, clicktracking = value(b"disable-tracking"), value(b"clicktracking")
    return (
        (disable is not None and disable not in (b"false", b"no"))
        or clicktracking == b"off"
        or b"data-no-track" in attributes
    )


def _find_hrefs(lower: bytes, start: int = 0, end: int | None = None, *, vml: bool = False) -> list[_Href]:
    """href values of links in real markup of lower-cased HTML (ASCII-compatible bytes)."""
    end = len(lower) if end is None else end
    found: list[_Href] = []
    pos = start
    while True:
        pos = lower.find(b"<", pos, end)
        if pos == -1:
            return found
        if lower.startswith(b"<!--", pos):
            conditional = _CONDITIONAL_START.match(lower, pos)
            if conditional is not None and vml:
                # A conditional block inside one being read: its start is a marker and what it holds is
                # read as part of the outer block, so nesting (or 1,000 unclosed starts) costs one pass.
                pos = conditional.end()
                continue
            if lower.startswith((b">", b"->"), pos + 4):  # "<!-->" and "<!--->" are empty comments
                pos = lower.find(b">", pos + 4) + 1
                continue
            close = _COMMENT_END.search(lower, pos + 4, end)
            stop = close.end() if close else end
            if conditional is not None:
                # Outlook renders what its conditional comments hold: those links are clicked too.
                inner_end = lower.rfind(b"<![endif]", conditional.end(), stop)
                found.extend(
                    _find_hrefs(lower, conditional.end(), inner_end if inner_end != -1 else stop, vml=True)
                )
            pos = stop
        elif lower.startswith(b"<![cdata[", pos):
            close_at = lower.find(b"]]>", pos, end)
            pos = end if close_at == -1 else close_at + 3
        elif lower.startswith((b"<!", b"<?", b"</"), pos):
            close_at = lower.find(b">", pos, end)
            pos = end if close_at == -1 else close_at + 1
        elif lower.startswith(b"<plaintext", pos):
            return found
        elif _TAG_NAME.match(lower, pos + 1, end):
            pos, href = _tag_hrefs(lower, pos, end, vml=vml)
            if href is not None:
                found.append(href)
        else:
            pos += 1


# HTML character references as the tokenizer reads them in an attribute value: a named reference without
# its ";" followed by "=" or an alphanumeric is left as text (the "&copy=2" query-string rule).
_CHARREF = re.compile(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)")


def _unescape_attribute(value: str) -> str:
    def replace(m: re.Match[str]) -> str:
        body = m.group(1)
        if body.startswith("#") or body.endswith(";"):
            return _html.unescape(m.group())
        for length in range(len(body), 0, -1):
            if body[:length] in _HTML5_ENTITIES:
                following = body[length : length + 1]
                if following and (following == "=" or following.isalnum()):
                    return m.group()
                return _HTML5_ENTITIES[body[:length]] + body[length:]
        return m.group()

    return _CHARREF.sub(replace, value)


def _url_from_href(raw: str) -> str:
    return _URL_WHITESPACE.sub("", _unescape_attribute(raw).strip(" \t\n\r\f"))


# --------------------------------------------------------------------------------------
# Plain text: find URLs
# --------------------------------------------------------------------------------------

_TEXT_URL = re.compile(rb"https?://[^\s<>\"'\x00]+", re.I)
_TRAILING_PUNCTUATION = b".,;:!?"


def _find_text_urls(lower: bytes) -> list[_Href]:
    found = []
    for m in _TEXT_URL.finditer(lower):
        end = m.end()
        while end > m.start():
            last = lower[end - 1 : end]
            if last in (b")", b"]", b"}"):
                opener = {b")": b"(", b"]": b"[", b"}": b"{"}[last]
                if lower.count(opener, m.start(), end) >= lower.count(last, m.start(), end):
                    break
            elif last not in _TRAILING_PUNCTUATION:
                break
            end -= 1
        found.append(_Href(m.start(), end))
    return found


# --------------------------------------------------------------------------------------
# Applying replacements to one decoded body
# --------------------------------------------------------------------------------------

_IDENTITY_LIMIT = 998  # RFC 5322 line length limit in octets, excluding CRLF
Edited = tuple[bytes, int]  # (new bytes, links rewritten); None instead: cannot be edited safely


def _replacements(
    decoded: bytes, charset: str | None, html: bool, link_url: LinkUrl, *, line_limit: bool
) -> Edited | None:
    """The decoded body with its links replaced. With *line_limit* (7bit/8bit), a replacement that would
    push its line past 998 octets is skipped: that link stays as it was."""
    editable = body_charset(decoded, charset)
    if editable is None:
        return None
    kind, name = editable
    if kind == "text":
        assert name is not None
        return _replace_in_text(decoded, name, html, link_url)
    return _replace_in_bytes(decoded, charset, kind == "stateful", html, link_url, line_limit=line_limit)


def _replace_in_text(decoded: bytes, charset: str, html: bool, link_url: LinkUrl) -> Edited | None:
    """A UTF-16/32 body: edited as text, and only if it round-trips."""
    unicode_codec, bom = resolve_unicode(decoded, charset)
    try:
        text = decoded[bom:].decode(unicode_codec)
        if text.encode(unicode_codec) != decoded[bom:]:  # only edit what round-trips
            return None
        spans = _find_hrefs(_masked(text)) if html else _find_text_urls(_masked(text))
        rewritten, count = _rewrite_spans(text, spans, html, link_url)
        return decoded[:bom] + rewritten.encode(unicode_codec), count
    except (UnicodeError, LookupError, ValueError):
        return None


class _LineBudget:
    """The 998-octet line limit of 7bit/8bit bodies: how much each line has grown so far."""

    def __init__(self, body: bytes):
        self.body = body
        self.growth: dict[int, int] = {}

    def allows(self, start: int, end: int, new_length: int) -> bool:
        """Record replacing body[start:end] with new_length octets; False (nothing recorded) if that would
        take a line that was within the limit past it."""
        line_start = self.body.rfind(b"\n", 0, start) + 1
        line_end = self.body.find(b"\n", end)
        line_end = len(self.body) if line_end == -1 else line_end
        growth = self.growth.get(line_start, 0) + new_length - (end - start)
        if line_end - line_start <= _IDENTITY_LIMIT < line_end - line_start + growth:
            return False
        self.growth[line_start] = growth
        return True


def _replace_in_bytes(
    decoded: bytes, charset: str | None, stateful: bool, html: bool, link_url: LinkUrl, *, line_limit: bool
) -> Edited:
    """An ASCII-compatible body (ISO-2022 included): edited as bytes, so unknown charsets survive."""
    masked, runs = mask_shifted(decoded) if stateful else (decoded, [])
    lower = masked.lower()
    spans = _find_hrefs(lower) if html else _find_text_urls(lower)
    codec = codec_for(charset)
    budget = _LineBudget(decoded) if line_limit else None
    out, last, count = [], 0, 0
    for span in spans:
        if any(a < span.end and span.start < b for a, b in runs):
            continue  # inside an ISO-2022 double-byte run: not a URL at all
        try:
            raw = decoded[span.start : span.end].decode(codec)
        except UnicodeDecodeError:
            continue
        replacement = link_url(_url_from_href(raw) if html else raw)
        if replacement is None:
            continue
        new = (_html.escape(replacement, quote=True) if html else replacement).encode("ascii")
        if budget is not None and not budget.allows(span.start, span.end, len(new)):
            continue  # this line would break the 998-octet limit of 7bit/8bit: leave the link
        out += [decoded[last : span.start], new]
        last = span.end
        count += 1
    out.append(decoded[last:])
    return b"".join(out), count


@functools.lru_cache(maxsize=64)
def codec_for(charset: str | None) -> str:
    """How to read a URL's bytes in an ASCII-compatible part: its charset, else UTF-8."""
    if charset:
        try:
            return codecs.lookup(charset.strip().strip("\"'").strip().lower()).name
        except (LookupError, ValueError):
            pass
    return "utf-8"


def _rewrite_spans(text: str, spans: list[_Href], html: bool, link_url: LinkUrl) -> tuple[str, int]:
    out, last, count = [], 0, 0
    for span in spans:
        raw = text[span.start : span.end]
        replacement = link_url(_url_from_href(raw) if html else raw)
        if replacement is None:
            continue
        out += [text[last : span.start], _html.escape(replacement, quote=True) if html else replacement]
        last = span.end
        count += 1
    out.append(text[last:])
    return "".join(out), count


def _masked(text: str) -> bytes:
    # One "?" per non-ASCII character keeps offsets aligned with *text*.
    return text.encode("ascii", "replace").lower()


def rewrite_html(html: str, link_url: LinkUrl, *, tracking_host: str = "") -> tuple[str, int]:
    """Replace the trackable href values of an HTML document or fragment; (new html, links rewritten)."""
    choose = _filtered(link_url, frozenset(), tracking_host)
    return _rewrite_spans(html, _find_hrefs(_masked(html)), True, choose)


def rewrite_text(text: str, link_url: LinkUrl, *, tracking_host: str = "") -> tuple[str, int]:
    """Replace the trackable http(s) URLs of plain text; (new text, links rewritten)."""
    choose = _filtered(link_url, frozenset(), tracking_host)
    return _rewrite_spans(text, _find_text_urls(_masked(text)), False, choose)


def _filtered(link_url: LinkUrl, skip: frozenset[str], tracking_host: str) -> LinkUrl:
    host = tracking_host.lower()

    def choose(url: str) -> str | None:
        return link_url(url) if _trackable(url, skip, host) else None

    return choose


# --------------------------------------------------------------------------------------
# Content-Transfer-Encodings
# --------------------------------------------------------------------------------------

_LINES = re.compile(rb"[^\n]*\n|[^\n]+")


def _qp_encode_line(line: bytes, eol: bytes) -> bytes:
    """Quoted-printable for one decoded line (its line ending kept as is), soft breaks within 76."""
    content = line.rstrip(b"\r\n")
    encoded = binascii.b2a_qp(content, istext=False)
    if eol != b"\n":
        encoded = encoded.replace(b"=\n", b"=" + eol)
    return encoded + line[len(content) :]


def _common_prefix(a: bytes, b: bytes) -> int:
    """Length of the common prefix, by binary search over slice comparisons (done in C)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _rewrite_qp(body: bytes, transform: Callable[[bytes], Edited | None]) -> Edited | None:
    """Decode, transform, and re-encode only the lines that changed; the rest stays byte for byte."""
    decoded = binascii.a2b_qp(body)
    edited = transform(decoded)
    if edited is None or not edited[1]:
        return None if edited is None else (body, 0)
    new_decoded, count = edited
    eol = b"\r\n" if b"\r\n" in body else b"\n"
    # Hard lines: physical lines joined while they end in a soft break ("=").
    hard: list[bytes] = []
    current = b""
    for physical in _LINES.findall(body):
        current += physical
        if not physical.rstrip(b"\r\n").rstrip(b" \t").endswith(b"="):
            hard.append(current)
            current = b""
    if current:
        hard.append(current)
    old_lines, new_lines = _LINES.findall(decoded), _LINES.findall(new_decoded)
    if len(old_lines) == len(new_lines) == len(hard):
        # The usual case: URLs hold no line breaks, so hard line i is still line i. (Were the lines
        # paired wrongly, the check below would refuse the result.)
        new_body = b"".join(
            encoded if old == new else _qp_encode_line(new, eol)
            for encoded, old, new in zip(hard, old_lines, new_lines, strict=True)
        )
    elif b"".join(decoded_hard := [binascii.a2b_qp(e) for e in hard]) == decoded:
        # Line breaks moved (an href value held one): re-encode from the first to the last changed line.
        prefix = _common_prefix(decoded, new_decoded)
        suffix = min(
            _common_prefix(decoded[::-1], new_decoded[::-1]), min(len(decoded), len(new_decoded)) - prefix
        )
        first = last = 0
        offset = 0
        for index, dec in enumerate(decoded_hard):
            if offset <= prefix:
                first = index
            if offset < len(decoded) - suffix:
                last = index
            offset += len(dec)
        head = sum(len(d) for d in decoded_hard[:first])
        tail = sum(len(d) for d in decoded_hard[last + 1 :])
        middle = _LINES.findall(new_decoded[head : len(new_decoded) - tail])
        new_body = b"".join(
            [*hard[:first], *(_qp_encode_line(line, eol) for line in middle), *hard[last + 1 :]]
        )
    else:
        return None  # the line-by-line view disagrees with the whole: do not risk it
    if binascii.a2b_qp(new_body) != new_decoded:
        return None
    return new_body, count


def _rewrite_base64(body: bytes, transform: Callable[[bytes], Edited | None]) -> Edited | None:
    body64 = decode_base64_body(body)  # a list footer after the padding is kept as it is
    if body64 is None:
        return None
    edited = transform(body64.decoded)
    if edited is None or not edited[1]:
        return None if edited is None else (body, 0)
    encoded = binascii.b2a_base64(edited[0], newline=False)
    core = body64.encoded
    layout = body64.line_layout()  # keep the original line length and line ending
    if layout is not None:
        eol, width = layout
    else:  # one unwrapped line stays unwrapped, unless it would now pass 998 octets
        eol = b"\r\n" if b"\r\n" in body else b"\n"
        width = len(encoded) if len(encoded) <= _IDENTITY_LIMIT or len(core) > _IDENTITY_LIMIT else 76
    wrapped = eol.join(encoded[i : i + width] for i in range(0, len(encoded), width))
    return body64.lead + wrapped + body64.appended + body64.trail, edited[1]


# An edit of one decoded part body: (decoded, charset, is_html, line_limit) -> (new decoded, edits made),
# or None where the body cannot be edited safely. `line_limit`: the body is 7bit/8bit, so no line may pass
# 998 octets.
BodyEdit = Callable[[bytes, "str | None", bool, bool], "Edited | None"]


def _rewrite_part(data: bytes, part: Part, html: bool, edit: BodyEdit) -> Edited | None:
    body = data[part.body_start : part.end]
    charset = part.info.get_content_charset()
    cte = part.cte
    if cte in ("x-uuencode", "uuencode", "x-uue", "uue"):
        return None  # as in the injector: not worth the risk
    if cte == "quoted-printable":
        return _rewrite_qp(body, lambda d: edit(d, charset, html, False))
    if cte == "base64":
        return _rewrite_base64(body, lambda d: edit(d, charset, html, False))
    return edit(body, charset, html, True)


def _text_parts(part: Part, top_level: bool = False) -> list[Part]:
    """Inline text/plain parts a client shows: never attachments, attached messages or signed content."""
    if is_attachment(part, top_level) or part.ctype == "multipart/signed":
        return []
    if part.ctype == "text/plain":
        return [part] if part.has_body else []
    found = []
    for child in part.children:
        found.extend(_text_parts(child))
    return found


def rewrite(
    message: bytes, link_url: LinkUrl, *, text: bool = False, tracking_host: str = ""
) -> RewriteResult:
    """Point every trackable link of the displayed HTML parts (and, with *text*, of the inline plain-text
    parts) at ``link_url(original)``. Every byte outside the rewritten URLs is kept."""
    data = bytes(message)
    choose = _filtered(link_url, list_unsubscribe_targets(data), tracking_host)

    def edit(decoded: bytes, charset: str | None, html: bool, line_limit: bool) -> Edited | None:
        return _replacements(decoded, charset, html, choose, line_limit=line_limit)

    return edit_bodies(data, edit, text=text)


def edit_bodies(message: bytes, edit: BodyEdit, *, text: bool = False) -> RewriteResult:
    """Apply `edit` to the decoded body of every displayed HTML part (and, with *text*, every inline
    plain-text part), each re-encoded in its own transfer encoding; every other byte is kept. Signed,
    encrypted and DKIM-signed messages are left alone, with the reason. `links` counts the edits made."""
    data = bytes(message)
    state = {"encrypted": False}
    root = parse_part(data, 0, len(data), "text/plain", 0, state)
    if state["encrypted"]:
        return RewriteResult(data, 0, ENCRYPTED)
    paths = candidates(root, (), top_level=True)
    if root.ctype == "multipart/signed" or any(p.ctype == "multipart/signed" for path in paths for p in path):
        return RewriteResult(data, 0, SIGNED)
    blank = BLANK_LINE.search(data)
    if DKIM_FIELD.search(data, 0, blank.end() if blank else len(data)):
        return RewriteResult(data, 0, DKIM_SIGNED)
    targets = [(path[-1], True) for path in paths]
    if text:
        targets += [(part, False) for part in _text_parts(root, top_level=True)]
    edits: list[tuple[int, int, bytes]] = []
    links, undecodable = 0, False
    for part, is_html in targets:
        edited = _rewrite_part(data, part, is_html, edit)
        if edited is None:
            undecodable = True
        elif edited[1]:
            edits.append((part.body_start, part.end, edited[0]))
            links += edited[1]
    if not edits:
        return RewriteResult(data, 0, UNDECODABLE if undecodable else None)
    out, last = [], 0
    for start, end, new_body in sorted(edits):
        out += [data[last:start], new_body]
        last = end
    out.append(data[last:])
    return RewriteResult(b"".join(out), links, None)
