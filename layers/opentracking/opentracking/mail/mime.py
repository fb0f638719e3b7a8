"""The byte-level MIME walker shared by the pixel injector and the link rewriter: the parts of a message
with the absolute offsets of their headers and bodies, the HTML parts a mail client shows (in display
order), and which charsets can be edited as bytes. One definition of each, so the pixel and the links
always agree on the part they touch.

It never parses-and-re-serialises with the ``email`` package (that would rewrite headers, boundaries and
encodings); ``email`` only reads one part's header block at a time, bounded first against hostile input.
"""

from __future__ import annotations

import binascii
import codecs
import email.message
import functools
import itertools
import re
from dataclasses import dataclass, field
from typing import Any

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
def charset_kind(charset: str | None) -> tuple[str, str | None]:
    """Classify a charset label: ("ascii", None), ("stateful", codec) or ("text", codec).

    "ascii": printable ASCII is encoded as itself, so the pixel can be spliced into the
    raw bytes without decoding.  Missing, unknown or bogus labels land here too: mail
    clients then render the bytes as some ASCII-compatible charset.
    "stateful": ISO-2022 family; ASCII bytes can also appear inside shifted (double-byte)
    runs, which mask_shifted blanks out before scanning.
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


def body_charset(decoded: bytes, charset: str | None) -> tuple[str, str | None] | None:
    """How a decoded body can be edited: its label's charset_kind, except that a UTF-16/32 byte-order
    mark beats the label. None when NULs say the label is wrong in a way we cannot guess: splicing ASCII
    there would corrupt the text."""
    kind, name = charset_kind(charset)
    if kind == "text":
        return kind, name
    if decoded.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "text", "utf-32"
    if decoded.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "text", "utf-16"
    if b"\x00" in decoded:
        return None
    return kind, name


# ISO-2022: ESC $ X / ESC $ ( X and ESC ( X (X not B or J) switch G0 away from ASCII, ESC ( B / ESC ( J
# switch back; SO ... SI (ISO-2022-KR) shift to G1.  ESC $ ) C only designates G1.
_ISO2022_SWITCH = re.compile(rb"\x1b\$\(?[@-~]|\x1b\([@-~]|\x1b\$\)[@-~]|\x0e|\x0f")


def mask_shifted(data: bytes) -> tuple[bytes, list[tuple[int, int]]]:
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


def resolve_unicode(data: bytes, name: str) -> tuple[str, int]:
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


DKIM_FIELD = re.compile(rb"^dkim-signature[ \t]*:", re.I | re.M)


BLANK_LINE = re.compile(rb"\n\r?\n")


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
class Part:
    start: int  # first byte of the part's header block
    body_start: int
    end: int  # end of the body (exclusive)
    has_body: bool  # False when the headers run to the end with no separator line
    ctype: str
    info: email.message.Message  # holds only the Content-* fields, for parameter parsing
    children: list[Part] = field(default_factory=list)

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


def parse_part(
    data: bytes, start: int, end: int, default_type: str, depth: int, state: dict[str, Any]
) -> Part:
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
    part = Part(start, body_start, end, has_body, info.get_content_type(), info)
    if part.ctype in _ENCRYPTED_TYPES:
        state["encrypted"] = True
    if part.ctype.startswith("multipart/") and depth < _MAX_DEPTH and has_body:
        boundary = info.get_boundary()
        if boundary:
            child_type = "message/rfc822" if part.ctype == "multipart/digest" else "text/plain"
            for a, b in _split_multipart(data, body_start, end, boundary):
                part.children.append(parse_part(data, a, b, child_type, depth + 1, state))
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


def is_attachment(part: Part, top_level: bool) -> bool:
    disposition = part.disposition
    if disposition == "attachment":
        return True
    # A named part without any disposition is shown as an attachment by most clients.
    return disposition is None and not top_level and part.info.get_filename() is not None


def candidates(part: Part, path: tuple[Part, ...], top_level: bool = False) -> list[tuple[Part, ...]]:
    """Paths (root ... html part) of the HTML parts a client would show, in display order."""
    if is_attachment(part, top_level):
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
            found = candidates(child, path)
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
        found = candidates(root, path)
        if found:
            return found
        for child in children:
            found = candidates(child, path)
            if found:
                return found
        return []
    if subtype == "signed":  # first child is the content, the second the signature
        return candidates(children[0], path)
    if subtype == "encrypted":
        return []
    # mixed, parallel, report, digest and unknown subtypes: every inline part is shown.
    found = []
    for child in children:
        found.extend(candidates(child, path))
    return found


# Characters a line of base64 may hold: the alphabet, padding and blanks. A line with any other character
# is not encoded data.
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/= \t\r]")


@dataclass(frozen=True)
class Base64Body:
    """A base64 body taken apart so that it can be put back byte for byte around new content."""

    lead: bytes  # whitespace before the encoded lines
    encoded: bytes  # the encoded lines, as they were
    appended: bytes  # text after the padding (a list footer), kept as it is
    trail: bytes  # whitespace after
    decoded: bytes

    def line_layout(self) -> tuple[bytes, int] | None:
        """(line ending, line width) of wrapped encoded lines; None when they are one unwrapped line."""
        first_nl = self.encoded.find(b"\n")
        if first_nl == -1:
            return None
        eol = b"\r\n" if self.encoded[first_nl - 1 : first_nl] == b"\r" else b"\n"
        width = len(self.encoded[:first_nl].rstrip(b" \t\r"))
        return eol, width if width > 0 and width % 4 == 0 else 76


def decode_base64_body(body: bytes) -> Base64Body | None:
    """The body's base64 decoded (missing padding tolerated), or None when it is not base64."""
    whitespace = b" \t\r\n\f"
    lead_len = len(body) - len(body.lstrip(whitespace))
    core = body[lead_len:].rstrip(whitespace)
    lead, trail = body[:lead_len], body[lead_len + len(core) :]
    core, appended = base64_and_appended(core)
    compact = core.translate(None, b" \t\r\n")
    if len(compact) % 4 in (2, 3) and b"=" not in compact:
        compact += b"=" * (-len(compact) % 4)
    try:
        decoded = binascii.a2b_base64(compact, strict_mode=True)
    except binascii.Error:
        return None
    return Base64Body(lead, core, appended, trail, decoded)


def base64_and_appended(core: bytes) -> tuple[bytes, bytes]:
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


def decoded_size(data: bytes, part: Part) -> int:
    """The size of a part's content once its transfer encoding is undone (what Mailgun reports as an
    attachment's `size`), computed without keeping the decoded bytes around."""
    body = data[part.body_start : part.end]
    if part.cte == "base64":
        compact = len(body) - sum(body.count(c) for c in (b" ", b"\t", b"\r", b"\n"))
        return max(compact * 3 // 4 - min(body.rstrip().count(b"=", -2), 2), 0)
    if part.cte == "quoted-printable":
        return len(binascii.a2b_qp(body))
    return len(body)


def attachments(data: bytes) -> list[dict[str, Any]]:
    """The attachments of a raw MIME message, in order, as Mailgun's accepted event lists them:
    `filename`, `content-type` and decoded `size`. Parts are found by the same bounded parser the injector
    uses (no content is decoded but quoted-printable's); attached messages are one attachment each."""
    root = parse_part(data, 0, len(data), "text/plain", 0, {})
    found: list[dict[str, Any]] = []

    def walk(part: Part, top_level: bool) -> None:
        if part.children:
            for child in part.children:
                walk(child, False)
            return
        if part.has_body and is_attachment(part, top_level):
            found.append(
                {
                    "filename": part.info.get_filename() or "",
                    "content-type": part.ctype,
                    "size": decoded_size(data, part),
                }
            )

    walk(root, True)
    return found
