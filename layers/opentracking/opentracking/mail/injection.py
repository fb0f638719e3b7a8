"""Byte-preserving open-tracking pixel injection into MIME messages.

The injector never parses-and-re-serialises a message with the ``email``
package: that would rewrite headers, boundaries and encodings.  Instead a small
byte-level MIME walker records the absolute offsets of every part, picks the
HTML body part a mail client would display, and splices the pixel markup into
that part's body only.  Every byte outside the target body (headers,
boundaries, other parts, preamble, epilogue) is left untouched, and the target
keeps its charset, Content-Transfer-Encoding and line endings.

Public API::

    inject(message: bytes, pixel_url: str, *, top=False) -> InjectionResult
    inject_html(html: str, pixel_url: str, *, top=False) -> str
    pixel_markup(pixel_url: str) -> str

When nothing is injected, ``InjectionResult.reason`` is one of the short codes
below and ``REASON_TEXT[reason]`` explains it in one plain-English sentence.
"""

from __future__ import annotations

import binascii
import codecs
import html as _html
import re
from dataclasses import dataclass

from opentracking.mail.mime import (
    BLANK_LINE,
    DKIM_FIELD,
    body_charset,
    candidates,
    decode_base64_body,
    mask_shifted,
    parse_part,
    resolve_unicode,
)

__all__ = [
    "DKIM_SIGNED",
    "ENCRYPTED",
    "NO_HTML_PART",
    "REASON_TEXT",
    "SIGNED",
    "UNDECODABLE",
    "InjectionResult",
    "inject",
    "inject_html",
    "pixel_markup",
]

NO_HTML_PART = "no-html-part"
SIGNED = "signed"
ENCRYPTED = "encrypted"
DKIM_SIGNED = "dkim-signed"
UNDECODABLE = "undecodable"

REASON_TEXT: dict[str, str] = {
    NO_HTML_PART: (
        "The message has no HTML body that a mail client would display (it is text-only, or its HTML "
        "is only in attachments or attached messages), so there is nowhere to place the tracking pixel."
    ),
    SIGNED: (
        "The message is cryptographically signed (multipart/signed), and adding a tracking pixel "
        "would invalidate the signature."
    ),
    ENCRYPTED: (
        "The message is encrypted or wrapped by S/MIME (pkcs7-mime), so its HTML cannot be read "
        "or changed to add a tracking pixel."
    ),
    DKIM_SIGNED: (
        "The message already carries a DKIM signature, and adding a tracking pixel would break "
        "that signature."
    ),
    UNDECODABLE: (
        "The HTML body could not be decoded safely (an unsupported character set or a malformed "
        "transfer encoding), so it was left unchanged rather than risk corrupting it."
    ),
}


@dataclass(frozen=True)
class InjectionResult:
    """Outcome of :func:`inject`; ``message`` is the input unchanged when not injected."""

    message: bytes
    injected: bool
    reason: str | None = None


_PIXEL_STYLE = (
    "height:1px !important;width:1px !important;border-width:0 !important;"
    "margin:0 !important;padding:0 !important"
)
# Control characters (including CR/LF) are turned into character references too, so the
# markup is always a single line of printable ASCII.
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def pixel_markup(pixel_url: str) -> str:
    """Return the 1x1 tracking ``<img>`` for *pixel_url* (always printable ASCII).

    The URL is attribute-escaped; non-ASCII and control characters become numeric
    character references, which HTML parsers decode back to the same URL.
    """
    url = _html.escape(pixel_url, quote=True)
    url = _CONTROL_CHARS.sub(lambda m: f"&#{ord(m.group())};", url)
    url = url.encode("ascii", "xmlcharrefreplace").decode("ascii")
    return f'<img src="{url}" alt="" width="1" height="1" border="0" style="{_PIXEL_STYLE}" />'


# --------------------------------------------------------------------------------------
# HTML scanning: find the real <body>, </body>, </html> and </head> tags.
#
# One regex does the whole scan in C.  Its possessive "boring" loop swallows text, comments
# (which covers Outlook conditional comments: "<!--[if mso]> ... <![endif]-->" is one
# comment, while the downlevel-revealed "<!--[if !mso]><!-->" and "<!--<![endif]-->" are
# two short comments with real markup between them), CDATA sections, bogus comments
# (<!DOCTYPE>, <![if ...]>, <?xml?>), raw-text elements (<script>, <style>, ...) and every
# ordinary tag with its attributes (quotes respected, so "</body>" inside an attribute value
# is not a tag).  Each match then ends at the next interesting tag, or at the end of input;
# because the pattern can always match at the end, finditer never rescans (linear time).
# --------------------------------------------------------------------------------------

# Attributes of a tag, per the HTML tokenizer: names run until whitespace, "/", ">" or "=";
# quotes only delimit a value directly after "=".  Atomic groups keep this linear.
_ATTRS = rb"""(?>[\s/]++|[^\s/>][^\s/>=]*+(?>\s*=\s*(?>"[^"]*+"|'[^']*+'|[^\s>]*+))?)*+"""
_RAWTEXT = (b"script", b"style", b"title", b"textarea", b"xmp", b"iframe", b"noembed", b"noframes")
_SPECIAL = rb"body|html|head"
# Raw-text elements run to their end tag, or to the end of input.  One alternative per name:
# a backreference would need a capturing group inside the possessive loop below, which trips
# a CPython bug ("The span of capturing group is wrong").
_RAWTEXT_ALTERNATIVES = b"".join(
    rb"| <%(n)s(?=[\s/>]|\Z)%(a)s>?(?:.*?</%(n)s(?=[\s/>]|\Z)%(a)s>?|.*) " % {b"n": name, b"a": _ATTRS}
    for name in _RAWTEXT
)

_HTML_SCAN = re.compile(
    rb"""
    (?:
        [^<]++
      | <(?!(?:%(special)s|%(raw)s|plaintext)(?:[\s/>]|\Z))[a-z][^\s/>]*+%(attrs)s>?  # ordinary start tag
      | </(?!(?:%(special)s)(?:[\s/>]|\Z))[a-z][^\s/>]*+%(attrs)s>?                   # ordinary end tag
      | <!--(?:-?>|.*?(?:--!?>|\Z))                  # comment, incl. conditional comments
      | <!\[cdata\[.*?(?:\]\]>|\Z)                   # CDATA section
      | <[!?][^>]*+>?                               # <!DOCTYPE>, <![if]>, <?xml?>: bogus comments
      | </(?![a-z])[^>]*+>?                         # "</>" and "</3": bogus comments
      %(rawtext)s
      | <plaintext(?=[\s/>]|\Z).*                   # everything after <plaintext> is text
      | <(?![a-z!?/])                               # a "<" that starts no tag is text
    )*+
    (?:
        (?P<tag><(?P<close>/)?(?P<name>%(special)s)(?=[\s/>]|\Z)%(attrs)s(?P<gt>>)?)
      | \Z
    )
    """
    % {
        b"special": _SPECIAL,
        b"raw": b"|".join(_RAWTEXT),
        b"attrs": _ATTRS,
        b"rawtext": _RAWTEXT_ALTERNATIVES,
    },
    # Ordinary tags come first in the loop: they are by far the most common token.  No re.I:
    # _scan matches a lowercased copy, which is faster than ignoring case.
    re.S | re.X,
)

# Items allowed before the content when there is no <body> tag (see _insertion_point).
_PROLOGUE_ITEM = re.compile(
    rb"\s++|<!--(?:-?>|.*?--!?>)|<[!?][^>]*+>|<html(?=[\s/>])%(a)s>|<(?P<head>head)(?=[\s/>])%(a)s>"
    % {b"a": _ATTRS},
    re.I | re.S,
)

_TRAILING_WS = b" \t\r\n\f"


@dataclass
class _Landmarks:
    body_open_end: int | None = None  # end of the first real <body ...>
    body_close: int | None = None  # start of the last real </body>
    html_close: int | None = None  # start of the last real </html>
    head_close_end: int | None = None  # end of the first real </head>


def _scan(buf: bytes) -> _Landmarks:
    marks = _Landmarks()
    # bytes.lower() only folds A-Z, so every offset stays valid for *buf*.
    for m in _HTML_SCAN.finditer(buf.lower()):
        if m.group("tag") is None:
            break
        if m.group("gt") is None:  # a tag cut off by the end of input is not a tag
            continue
        name = m.group("name")
        closing = m.group("close") is not None
        if name == b"body":
            if closing:
                marks.body_close = m.start("tag")
            elif marks.body_open_end is None:
                marks.body_open_end = m.end()
        elif name == b"html":
            if closing:
                marks.html_close = m.start("tag")
        elif closing and marks.head_close_end is None:
            marks.head_close_end = m.end()
    return marks


def _insertion_point(buf: bytes, top: bool, start: int = 0) -> int:
    """Offset in *buf* (HTML as ASCII-compatible bytes) where the pixel goes.

    Bottom: just before the last real ``</body>``; without one, before the last real
    ``</html>``; without that, at the end of the content (before trailing whitespace, so
    the body keeps its trailing line-ending structure).

    Top: just after the first real ``<body ...>`` start tag.  Without one, after the
    document prologue: leading whitespace, comments, ``<?xml?>``, ``<!DOCTYPE>``, the
    ``<html>`` start tag and a whole ``<head>...</head>``; in a bare fragment that is
    position *start* (0, or just after a byte-order mark).
    """
    marks = _scan(buf)
    if not top:
        if marks.body_close is not None:
            return marks.body_close
        if marks.html_close is not None:
            return marks.html_close
        return max(start, len(buf.rstrip(_TRAILING_WS)))
    if marks.body_open_end is not None:
        return marks.body_open_end
    pos = start
    while True:
        m = _PROLOGUE_ITEM.match(buf, pos)
        if m is None or m.end() == pos:
            break
        pos = m.end()
        if m.group("head") is not None and marks.head_close_end is not None and marks.head_close_end > pos:
            pos = marks.head_close_end
    # Do not stop after whitespace that ends the input: put the pixel before it instead.
    return pos if buf[pos:].strip(_TRAILING_WS) else max(start, len(buf.rstrip(_TRAILING_WS)))


def inject_html(html: str, pixel_url: str, *, top: bool = False) -> str:
    """Insert the tracking pixel into an HTML document or fragment (see _insertion_point)."""
    pos = insertion_index(html, top=top)
    return html[:pos] + pixel_markup(pixel_url) + html[pos:]


def insertion_index(html: str, *, top: bool = False) -> int:
    """Where the pixel goes in an HTML string: the place for anything added at the bottom (or top)."""
    # Replacing each non-ASCII character with one "?" keeps indexes aligned with *html*.
    masked = html.encode("ascii", "replace")
    return _insertion_point(masked, top, 1 if html.startswith("\ufeff") else 0)


def insertion_offset(decoded: bytes, *, top: bool = False) -> int:
    """insertion_index for the bytes of an ASCII-compatible HTML body (a UTF-8 BOM skipped)."""
    return _insertion_point(decoded, top, 3 if decoded.startswith(codecs.BOM_UTF8) else 0)


# --------------------------------------------------------------------------------------
# Charsets
# --------------------------------------------------------------------------------------


def _locate(decoded: bytes, charset: str | None, top: bool, markup: str) -> tuple[int, bytes, bool] | None:
    """Where and what to insert into a decoded part body.

    Returns (byte offset, markup encoded like the body, ascii_compatible), or None when
    the body cannot be handled safely.
    """
    editable = body_charset(decoded, charset)
    if editable is None:
        return None
    kind, name = editable
    if kind == "ascii":
        start = 3 if decoded.startswith(codecs.BOM_UTF8) else 0
        return _insertion_point(decoded, top, start), markup.encode("ascii"), True
    if kind == "stateful":
        masked, runs = mask_shifted(decoded)
        pos = _insertion_point(masked, top)
        if any(a <= pos < b for a, b in runs):  # would land inside a double-byte run
            return None
        return pos, markup.encode("ascii"), True
    assert name is not None
    codec, bom = resolve_unicode(decoded, name)
    try:
        text = decoded[bom:].decode(codec)
        if text.encode(codec) != decoded[bom:]:  # only splice where the codec round-trips
            return None
        markup_bytes = markup.encode(codec)
    except (UnicodeError, LookupError, ValueError):
        return None
    start = 1 if text.startswith("\ufeff") else 0
    idx = _insertion_point(text.encode("ascii", "replace"), top, start)
    return bom + len(text[:idx].encode(codec)), markup_bytes, False


# --------------------------------------------------------------------------------------
# MIME walking
# --------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------
# Splicing into the target body per Content-Transfer-Encoding
# --------------------------------------------------------------------------------------

_IDENTITY_LIMIT = 998  # RFC 5322 line length limit in octets, excluding CRLF


def _eol_near(data: bytes, start: int, end: int, fallback_start: int = 0) -> bytes:
    """The line ending used in data[start:end]; else in data[fallback_start:end]; else anywhere."""
    i = data.find(b"\n", start, end)
    if i == -1:
        i = data.find(b"\n", fallback_start, end)
    if i == -1:
        i = data.find(b"\n")
    if i == -1:
        return b"\r\n"
    return b"\r\n" if i > 0 and data[i - 1] == 0x0D else b"\n"


def _splice_identity(body: bytes, top: bool, charset: str | None, markup: str, eol: bytes) -> bytes | None:
    found = _locate(body, charset, top, markup)
    if found is None:
        return None
    pos, chunk, ascii_compatible = found
    if ascii_compatible:
        # Keep 7bit/8bit lines within 998 octets: break the line before the markup (or,
        # when the rest of the line would still be too long, after it).
        line_start = body.rfind(b"\n", 0, pos) + 1
        line_end = body.find(b"\n", pos)
        if line_end == -1:
            line_end = len(body)
        elif line_end > 0 and body[line_end - 1] == 0x0D:
            line_end -= 1
        head, tail = pos - line_start, line_end - pos
        if head + tail <= _IDENTITY_LIMIT < head + len(chunk) + tail:
            if len(chunk) + tail <= _IDENTITY_LIMIT:
                chunk = eol + chunk
            elif head + len(chunk) <= _IDENTITY_LIMIT:
                chunk = chunk + eol
            else:
                chunk = eol + chunk + eol
    return body[:pos] + chunk + body[pos:]


# Escape tokens as binascii.a2b_qp (used by the email package) reads them: "=XX"; a soft
# break "=\n", or "=\r" up to the next "\n"; "==" (decodes to "="); "=" at the very end
# (dropped); any other "=" is kept as a literal.
_QP_ESCAPE = re.compile(rb"=(?:[0-9A-Fa-f]{2}|\r[^\n]*+\n?|\n|=|\Z)|=")
_QP_SAFE = frozenset(range(33, 127)) - {ord("=")} | {ord(" ")}
_QP_MAX = 76


def _qp_decoded_width(token: bytes) -> int:
    if token in (b"=", b"==") or (len(token) == 3 and token[1] not in b"\r\n"):
        return 1  # literal "=", "==" or =XX
    return 0  # soft line break, or "=" at the very end


def _qp_split(line: bytes, j: int) -> int:
    """Offset in the encoded *line* where decoded offset *j* starts (never inside an escape)."""
    decoded = pos = 0
    for m in _QP_ESCAPE.finditer(line):
        run = m.start() - pos
        if decoded + run >= j:
            return pos + (j - decoded)
        decoded += run + _qp_decoded_width(m.group())
        pos = m.end()
    return min(len(line), pos + (j - decoded))


def _qp_position(enc: bytes, dec_len: int, d: int) -> tuple[int, int]:
    """Map decoded offset *d* to (line start, offset within that line) in QP text *enc*.

    Quoted-printable decodes line by line, so walk whole lines (each decoded in C) from
    whichever end is nearer to *d*: bottom placement only touches the last few lines.
    """
    n = len(enc)
    if n == 0:
        return 0, 0
    if d <= dec_len // 2:
        pos = cum = 0
        while True:
            nl = enc.find(b"\n", pos)
            line_end = n if nl == -1 else nl + 1
            width = len(binascii.a2b_qp(enc[pos:line_end]))
            if cum + width > d or line_end == n:
                return pos, _qp_split(enc[pos:line_end], d - cum)
            cum += width
            pos = line_end
    end, after = n, 0
    while True:
        line_start = enc.rfind(b"\n", 0, end - 1) + 1
        line = enc[line_start:end]
        width = len(binascii.a2b_qp(line))
        first = dec_len - after - width  # decoded offset where this line starts
        if first <= d or line_start == 0:
            j = d - first
            if j >= width and end != n:
                return end, 0  # exactly at the start of the following line
            return line_start, _qp_split(line, j)
        after += width
        end = line_start


def _qp_encode_chunk(markup: bytes, col: int, rest: int, eol: bytes) -> bytes:
    """QP-encode *markup* to be inserted at column *col* of a line with *rest* chars after it.

    Soft line breaks keep every encoded line within 76 characters; escapes are never split.
    """
    out = []
    for byte in markup:
        token = bytes((byte,)) if byte in _QP_SAFE else b"=%02X" % byte
        if col + len(token) > _QP_MAX - 1:  # leave room for the "=" of a soft break
            out.append(b"=" + eol)
            col = 0
        out.append(token)
        col += len(token)
    if rest and col + rest > _QP_MAX:
        out.append(b"=" + eol)
    return b"".join(out)


def _splice_qp(body: bytes, top: bool, charset: str | None, markup: str, eol: bytes) -> bytes | None:
    decoded = binascii.a2b_qp(body)
    found = _locate(decoded, charset, top, markup)
    if found is None:
        return None
    d, chunk, _ = found
    line_start, k = _qp_position(body, len(decoded), d)
    nl = body.find(b"\n", line_start)
    line_end = len(body) if nl == -1 else nl + 1
    content_end = line_end
    if body[line_start:line_end].endswith(b"\n"):
        line_eol = b"\r\n" if body[line_start:line_end].endswith(b"\r\n") else b"\n"
        content_end -= len(line_eol)
    else:
        line_eol = eol
    at = line_start + k
    if at > content_end:  # after the final hard line break: a fresh line
        col, rest = 0, 0
    else:
        col, rest = k, content_end - at
    new_body = body[:at] + _qp_encode_chunk(chunk, col, rest, line_eol) + body[at:]
    # Never hand back something that decodes differently from what we meant.
    if binascii.a2b_qp(new_body) != decoded[:d] + chunk + decoded[d:]:
        return None
    return new_body


def _splice_base64(body: bytes, top: bool, charset: str | None, markup: str, eol: bytes) -> bytes | None:
    # Leading and trailing whitespace (e.g. the final line ending) is kept byte for byte.
    body64 = decode_base64_body(body)
    if body64 is None:
        return None
    decoded, core = body64.decoded, body64.encoded
    found = _locate(decoded, charset, top, markup)
    if found is None:
        return None
    pos, chunk, _ = found
    encoded = binascii.b2a_base64(decoded[:pos] + chunk + decoded[pos:], newline=False)
    # Keep the original layout: same line length and line ending.
    layout = body64.line_layout()
    if layout is not None:
        line_eol, width = layout
    else:
        line_eol = eol
        # One unwrapped line stays unwrapped, unless it would now pass 998 octets.
        single = len(core) > 76 and not len(core) <= _IDENTITY_LIMIT < len(encoded)
        width = len(encoded) if single else 76
    wrapped = line_eol.join([encoded[i : i + width] for i in range(0, len(encoded), width)])
    return body64.lead + wrapped + body64.appended + body64.trail


_SPLICERS = {"quoted-printable": _splice_qp, "base64": _splice_base64}


def inject(message: bytes, pixel_url: str, *, top: bool = False) -> InjectionResult:
    """Insert one tracking pixel into the HTML body part a client would display.

    Checks, in order: encrypted content anywhere (``encrypted``), a displayed HTML part
    (``no-html-part``), multipart/signed on the path to it (``signed``), a top-level
    DKIM-Signature (``dkim-signed``), and a safely decodable body (``undecodable``).
    """
    if not isinstance(message, (bytes, bytearray, memoryview)):
        raise TypeError("message must be bytes")
    data = bytes(message)
    state = {"encrypted": False}
    root = parse_part(data, 0, len(data), "text/plain", 0, state)
    if state["encrypted"]:
        return InjectionResult(data, False, ENCRYPTED)
    found = candidates(root, (), top_level=True)
    if not found:
        return InjectionResult(data, False, NO_HTML_PART)
    path = found[0] if top else found[-1]
    if any(p.ctype == "multipart/signed" for p in path):
        return InjectionResult(data, False, SIGNED)
    # Look for DKIM-Signature up to the first empty line, even past a malformed line that
    # ended the header block early: when in doubt, do not break a signature.
    blank = BLANK_LINE.search(data)
    if DKIM_FIELD.search(data, 0, blank.end() if blank else len(data)):
        return InjectionResult(data, False, DKIM_SIGNED)
    target = path[-1]
    body = data[target.body_start : target.end]
    eol = _eol_near(data, target.body_start, target.end, target.start)
    cte = target.cte
    if cte in ("x-uuencode", "uuencode", "x-uue", "uue"):
        new_body = None  # an HTML body inside uuencode is not worth the risk
    else:
        splice = _SPLICERS.get(cte, _splice_identity)  # 7bit/8bit/binary/none/unknown: identity
        new_body = splice(body, top, target.info.get_content_charset(), pixel_markup(pixel_url), eol)
    if new_body is None:
        return InjectionResult(data, False, UNDECODABLE)
    return InjectionResult(data[: target.body_start] + new_body + data[target.end :], True, None)
