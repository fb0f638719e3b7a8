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
import email.message
import functools
import html as _html
import itertools
import re
from dataclasses import dataclass, field
from typing import Any

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
    # Replacing each non-ASCII character with one "?" keeps indexes aligned with *html*.
    masked = html.encode("ascii", "replace")
    start = 1 if html.startswith("\ufeff") else 0
    pos = _insertion_point(masked, top, start)
    return html[:pos] + pixel_markup(pixel_url) + html[pos:]


# --------------------------------------------------------------------------------------
# Charsets
# --------------------------------------------------------------------------------------

_PROBE = "".join(chr(c) for c in range(0x20, 0x7F)) + "\t\r\n"
_PROBE_BYTES = _PROBE.encode("ascii")
# Labels some (mostly Microsoft) mailers use for UTF-16/32 that Python does not know.
_UNICODE_ALIASES = {
    "unicode": "utf-16",
    "csunicode": "utf-16",
    "ucs-2": "utf-16",
    "ucs2": "utf-16",
    "iso-10646-ucs-2": "utf-16",
    "unicodefffe": "utf-16-be",
    "ucs-4": "utf-32",
    "ucs4": "utf-32",
    "iso-10646-ucs-4": "utf-32",
}


@functools.lru_cache(maxsize=256)
def _charset_kind(charset: str | None) -> tuple[str, str | None]:
    """Classify a charset label: ("ascii", None), ("stateful", codec) or ("text", codec).

    "ascii": printable ASCII is encoded as itself, so the pixel can be spliced into the
    raw bytes without decoding.  Missing, unknown or bogus labels land here too: mail
    clients then render the bytes as some ASCII-compatible charset.
    "stateful": ISO-2022 family; ASCII bytes can also appear inside shifted (double-byte)
    runs, which _mask_shifted blanks out before scanning.
    "text": not ASCII-compatible (UTF-16, UTF-32, EBCDIC, ...); decode and work on text.
    """
    if not charset:
        return "ascii", None
    label = charset.strip().strip("\"'").strip().lower()
    label = _UNICODE_ALIASES.get(label, label)
    try:
        name = codecs.lookup(label).name
    except (LookupError, ValueError):  # unknown or bogus label (ValueError: a NUL in it; found by atheris)
        return "ascii", None
    try:
        compatible = _PROBE.encode(name) == _PROBE_BYTES and _PROBE_BYTES.decode(name) == _PROBE
    except LookupError:  # a bytes-to-bytes codec such as "base64" is no charset at all
        return "ascii", None
    except (UnicodeError, ValueError, TypeError):
        compatible = False
    if compatible:
        return ("stateful", name) if name.startswith("iso2022") else ("ascii", None)
    return "text", name


# ISO-2022: ESC $ X / ESC $ ( X and ESC ( X (X not B or J) switch G0 away from ASCII, ESC ( B / ESC ( J
# switch back; SO ... SI (ISO-2022-KR) shift to G1.  ESC $ ) C only designates G1.
_ISO2022_SWITCH = re.compile(rb"\x1b\$\(?[@-~]|\x1b\([@-~]|\x1b\$\)[@-~]|\x0e|\x0f")


def _mask_shifted(data: bytes) -> tuple[bytes, list[tuple[int, int]]]:
    """Blank out (with NUL) ISO-2022 runs that are not in ASCII state; return the runs too."""
    runs: list[tuple[int, int]] = []
    g0_other = shifted_out = False
    run_start = 0
    for m in _ISO2022_SWITCH.finditer(data):
        seq = m.group()
        before = g0_other or shifted_out
        if seq == b"\x0e":
            shifted_out = True
        elif seq == b"\x0f":
            shifted_out = False
        elif seq.startswith(b"\x1b$)"):
            continue
        elif seq.startswith(b"\x1b("):
            g0_other = seq[2:] not in (b"B", b"J")
        else:
            g0_other = True
        after = g0_other or shifted_out
        if after and not before:
            run_start = m.end()
        elif before and not after:
            runs.append((run_start, m.start()))
    if g0_other or shifted_out:
        runs.append((run_start, len(data)))
    if not runs:
        return data, runs
    buf = bytearray(data)
    for a, b in runs:
        buf[a:b] = bytes(b - a)
    return bytes(buf), runs


def _resolve_unicode(data: bytes, name: str) -> tuple[str, int]:
    """Pick the concrete UTF-16/32 codec (endianness) and the BOM length to skip."""
    if name == "utf-32":
        if data.startswith(codecs.BOM_UTF32_LE):
            return "utf-32-le", 4
        if data.startswith(codecs.BOM_UTF32_BE):
            return "utf-32-be", 4
        # No BOM: HTML is mostly ASCII, so see which byte of each unit is usually non-zero.
        sample = data[:4096]
        return ("utf-32-le" if sample[3::4].count(0) > sample[0::4].count(0) else "utf-32-be"), 0
    if name == "utf-16":
        if data.startswith(codecs.BOM_UTF16_LE):
            return "utf-16-le", 2
        if data.startswith(codecs.BOM_UTF16_BE):
            return "utf-16-be", 2
        sample = data[:4096]
        # RFC 2781: without a BOM assume big-endian, unless the bytes clearly say otherwise.
        return ("utf-16-le" if sample[1::2].count(0) > sample[0::2].count(0) else "utf-16-be"), 0
    return name, 0


def _locate(decoded: bytes, charset: str | None, top: bool, markup: str) -> tuple[int, bytes, bool] | None:
    """Where and what to insert into a decoded part body.

    Returns (byte offset, markup encoded like the body, ascii_compatible), or None when
    the body cannot be handled safely.
    """
    kind, name = _charset_kind(charset)
    if kind != "text":
        # A UTF-16/32 byte-order mark beats the label; other NULs mean the label is wrong in
        # a way we cannot guess, and splicing ASCII there would corrupt the text.
        if decoded.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
            kind, name = "text", "utf-32"
        elif decoded.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            kind, name = "text", "utf-16"
        elif b"\x00" in decoded:
            return None
    if kind == "ascii":
        start = 3 if decoded.startswith(codecs.BOM_UTF8) else 0
        return _insertion_point(decoded, top, start), markup.encode("ascii"), True
    if kind == "stateful":
        masked, runs = _mask_shifted(decoded)
        pos = _insertion_point(masked, top)
        if any(a <= pos < b for a, b in runs):  # would land inside a double-byte run
            return None
        return pos, markup.encode("ascii"), True
    assert name is not None
    codec, bom = _resolve_unicode(decoded, name)
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

# Header lines end where the email package's feedparser says they do: at an empty line, or
# at the first line that is neither "Name:" (printable, no space, before the colon), a
# continuation (leading space/tab) nor an mbox "From " line.
_HEADER_STOP = re.compile(rb"^(?!From |[\041-\071\073-\176]*:|[\t ])", re.M)
_FIELD = re.compile(
    rb"^(content-type|content-transfer-encoding|content-disposition|content-id)"
    rb":([^\r\n]*(?:\r?\n[ \t][^\r\n]*)*)",
    re.I | re.M,
)
_FOLD = re.compile(r"\r?\n")
_DKIM = re.compile(rb"^dkim-signature[ \t]*:", re.I | re.M)
_BLANK_LINE = re.compile(rb"\n\r?\n")
_DELIM_TAIL = re.compile(rb"(--)?[ \t]*(?:\r?\n|\Z)")
_CTE_TOKEN = re.compile(r"[a-z0-9-]+")
_MAX_DEPTH = 64
# The email package parses parameters in quadratic time (each ';' inside quotes recounts the quotes before
# it), so a 400 KB Content-Type took minutes. Real headers carry a handful of short parameters (RFC 2231
# splits long names into numbered pieces): beyond these bounds, parameters are not looked at.
_MAX_PARAMS = 16
_MAX_PARAM_CHARS = 512
_ENCRYPTED_TYPES = frozenset({"multipart/encrypted", "application/pkcs7-mime", "application/x-pkcs7-mime"})


@dataclass
class _Part:
    start: int  # first byte of the part's header block
    body_start: int
    end: int  # end of the body (exclusive)
    has_body: bool  # False when the headers run to the end with no separator line
    ctype: str
    info: email.message.Message  # holds only the Content-* fields, for parameter parsing
    children: list[_Part] = field(default_factory=list)

    @property
    def cte(self) -> str:
        # Normalise bogus values: "quoted-printable;" -> "quoted-printable", "basE64" -> "base64".
        m = _CTE_TOKEN.search(str(self.info.get("content-transfer-encoding", "")).lower())
        return m.group() if m else ""

    @property
    def disposition(self) -> str | None:
        return self.info.get_content_disposition()


def _header_end(data: bytes, start: int, end: int) -> tuple[int, int, bool]:
    """Return (end of header block, start of body, has_body) for the part at [start, end)."""
    m = _HEADER_STOP.search(data, start, end)
    if m is None or m.start() >= end:
        return end, end, False
    p = m.start()
    if data.startswith(b"\n", p):
        return p, p + 1, True
    if data.startswith(b"\r\n", p):
        return p, p + 2, True
    return p, p, True  # a non-header line starts the body (missing separator)


def _bounded_parameters(value: str) -> str:
    """The header value with at most _MAX_PARAMS parameters of at most _MAX_PARAM_CHARS each, found in one
    pass that splits at the semicolons outside quoted strings (as the email package does). A longer
    parameter keeps its name and the start of its value, so a long filename still names an attachment."""
    if value.count(";") <= _MAX_PARAMS and len(value) <= _MAX_PARAMS * _MAX_PARAM_CHARS:
        return value  # the common case, and already cheap to parse
    cuts, _, _ = _scan_quoting(value, stop_after=_MAX_PARAMS + 1)
    bounds = [-1, *cuts, len(value)]
    pieces = [value[a + 1 : b] for a, b in itertools.pairwise(bounds)][: _MAX_PARAMS + 1]
    main, params = pieces[0], pieces[1:]
    return "; ".join([main[:_MAX_PARAM_CHARS], *(_truncated(p.strip()) for p in params)])


def _scan_quoting(text: str, stop_after: int | None = None) -> tuple[list[int], bool, bool]:
    """One pass over a header value: the positions of the semicolons outside quoted strings (at most
    `stop_after`), and whether the text ends inside a quoted string, and right after its backslash."""
    semicolons: list[int] = []
    quoted = escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ";" and not quoted:
            semicolons.append(i)
            if stop_after is not None and len(semicolons) >= stop_after:
                break
    return semicolons, quoted, escaped


def _truncated(parameter: str) -> str:
    """A parameter cut to _MAX_PARAM_CHARS, its quoted string (if any) still closed."""
    if len(parameter) <= _MAX_PARAM_CHARS:
        return parameter
    cut = parameter[:_MAX_PARAM_CHARS]
    _, quoted, escaped = _scan_quoting(cut)
    if escaped:
        cut = cut[:-1]
    return cut + '"' if quoted else cut


def _parse_part(
    data: bytes, start: int, end: int, default_type: str, depth: int, state: dict[str, Any]
) -> _Part:
    header_end, body_start, has_body = _header_end(data, start, end)
    info = email.message.Message()
    seen: set[bytes] = set()
    for m in _FIELD.finditer(data, start, header_end):
        name = m.group(1).lower()
        if name not in seen:  # the first occurrence wins, as in the email package
            seen.add(name)
            value = _FOLD.sub("", m.group(2).decode("latin-1")).strip()
            info[name.decode("ascii")] = _bounded_parameters(value)
    info.set_default_type(default_type)
    part = _Part(start, body_start, end, has_body, info.get_content_type(), info)
    if part.ctype in _ENCRYPTED_TYPES:
        state["encrypted"] = True
    if part.ctype.startswith("multipart/") and depth < _MAX_DEPTH and has_body:
        boundary = info.get_boundary()
        if boundary:
            child_type = "message/rfc822" if part.ctype == "multipart/digest" else "text/plain"
            for a, b in _split_multipart(data, body_start, end, boundary):
                part.children.append(_parse_part(data, a, b, child_type, depth + 1, state))
    # message/* parts are opaque: never descend into attached messages.
    return part


def _split_multipart(data: bytes, start: int, end: int, boundary: str) -> list[tuple[int, int]]:
    """Byte ranges of the body parts of a multipart body at [start, end) (RFC 2046).

    A delimiter line is "--boundary", optional spaces/tabs and a line end; the line end
    before it belongs to the delimiter.  Stops at the close delimiter; a missing one
    makes the last part run to *end*.  Uses bytes.find (fast) rather than a line loop.
    """
    needle = b"--" + boundary.encode("latin-1", "replace")
    ranges: list[tuple[int, int]] = []
    part_start: int | None = None
    pos = data.find(needle, start, end)
    while pos != -1:
        tail = _DELIM_TAIL.match(data, pos + len(needle), end)
        if tail is not None and (pos == start or data[pos - 1] == 0x0A):
            if part_start is not None:
                stop = pos
                if stop > start and data[stop - 1] == 0x0A:
                    stop -= 2 if stop - 1 > start and data[stop - 2] == 0x0D else 1
                ranges.append((part_start, max(part_start, stop)))
            if tail.group(1):  # close delimiter
                return ranges
            part_start = tail.end()
        pos = data.find(needle, pos + 1, end)
    if part_start is not None:
        ranges.append((part_start, end))
    return ranges


def _is_attachment(part: _Part, top_level: bool) -> bool:
    disposition = part.disposition
    if disposition == "attachment":
        return True
    # A named part without any disposition is shown as an attachment by most clients.
    return disposition is None and not top_level and part.info.get_filename() is not None


def _candidates(part: _Part, path: tuple[_Part, ...], top_level: bool = False) -> list[tuple[_Part, ...]]:
    """Paths (root ... html part) of the HTML parts a client would show, in display order."""
    if _is_attachment(part, top_level):
        return []
    path = (*path, part)
    ctype = part.ctype
    if ctype == "text/html":
        return [path] if part.has_body else []
    if not ctype.startswith("multipart/") or not part.children:
        return []
    subtype = ctype[len("multipart/") :]
    children = part.children
    if subtype == "alternative":  # the client shows the last alternative it can render
        for child in reversed(children):
            found = _candidates(child, path)
            if found:
                return found
        return []
    if subtype == "related":  # the root part (start=<cid>, else the first one) is shown
        root = children[0]
        start = part.info.get_param("start")
        if isinstance(start, str) and start.strip():
            wanted = start.strip()
            for child in children:
                if str(child.info.get("content-id", "")).strip() == wanted:
                    root = child
                    break
        found = _candidates(root, path)
        if found:
            return found
        for child in children:
            found = _candidates(child, path)
            if found:
                return found
        return []
    if subtype == "signed":  # first child is the content, the second the signature
        return _candidates(children[0], path)
    if subtype == "encrypted":
        return []
    # mixed, parallel, report, digest and unknown subtypes: every inline part is shown.
    found = []
    for child in children:
        found.extend(_candidates(child, path))
    return found


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
    lead_len = len(body) - len(body.lstrip(_TRAILING_WS))
    core = body[lead_len:].rstrip(_TRAILING_WS)
    lead, trail = body[:lead_len], body[lead_len + len(core) :]
    core, appended = _base64_and_appended(core)
    compact = core.translate(None, b" \t\r\n")
    if len(compact) % 4 in (2, 3) and b"=" not in compact:
        compact += b"=" * (-len(compact) % 4)  # tolerate missing padding
    try:
        decoded = binascii.a2b_base64(compact, strict_mode=True)
    except binascii.Error:
        return None
    found = _locate(decoded, charset, top, markup)
    if found is None:
        return None
    pos, chunk, _ = found
    encoded = binascii.b2a_base64(decoded[:pos] + chunk + decoded[pos:], newline=False)
    # Keep the original layout: same line length and line ending.
    first_nl = core.find(b"\n")
    if first_nl != -1:
        line_eol = b"\r\n" if core[first_nl - 1 : first_nl] == b"\r" else b"\n"
        width = len(core[:first_nl].rstrip(b" \t\r"))
        if width <= 0 or width % 4:
            width = 76
    else:
        line_eol = eol
        # One unwrapped line stays unwrapped, unless it would now pass 998 octets.
        single = len(core) > 76 and not len(core) <= _IDENTITY_LIMIT < len(encoded)
        width = len(encoded) if single else 76
    wrapped = line_eol.join([encoded[i : i + width] for i in range(0, len(encoded), width)])
    return lead + wrapped + appended + trail


# Characters a line of base64 may hold: the alphabet, padding and blanks. A line with any other character
# is not encoded data.
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/= \t\r]")


def _base64_and_appended(core: bytes) -> tuple[bytes, bytes]:
    """Split a base64 body into its encoded lines and text appended after them (a mailing list's footer,
    added after the padding). Mail clients decode the lines up to the padding, or up to the first line that
    is not base64, and show the HTML: so do we, and keep the appended text as it is. The split falls at
    the end of the last encoded line, so the appended part starts with that line's ending. A body whose
    first line is not base64 has no encoded lines: it is left whole (and found undecodable)."""
    if not _NOT_BASE64.search(core):
        return core, b""  # only base64 characters: nothing appended (the common case, at C speed)
    end, pos = 0, 0
    while pos < len(core):
        newline = core.find(b"\n", pos)
        line_end = len(core) if newline == -1 else newline
        line = core[pos:line_end]
        if line.strip(b" \t\r"):
            if _NOT_BASE64.search(line):
                break
            end = pos + len(line.rstrip(b" \t\r"))
            if b"=" in line:
                break  # the padding ends the encoded data
        pos = line_end + 1
    if end == 0 or not core[end:].strip(b" \t\r\n"):
        return core, b""
    return core[:end], core[end:]


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
    root = _parse_part(data, 0, len(data), "text/plain", 0, state)
    if state["encrypted"]:
        return InjectionResult(data, False, ENCRYPTED)
    found = _candidates(root, (), top_level=True)
    if not found:
        return InjectionResult(data, False, NO_HTML_PART)
    path = found[0] if top else found[-1]
    if any(p.ctype == "multipart/signed" for p in path):
        return InjectionResult(data, False, SIGNED)
    # Look for DKIM-Signature up to the first empty line, even past a malformed line that
    # ended the header block early: when in doubt, do not break a signature.
    blank = _BLANK_LINE.search(data)
    if _DKIM.search(data, 0, blank.end() if blank else len(data)):
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
