"""The injector's reference model and message builders, shared by its unit and corpus tests.

The checker (`assert_preserved`) locates the target part on its own, with the stdlib `email` parser and a
separate little boundary splitter, and never through the injector's code path."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import email
import email.message
import email.policy
import html
import quopri
import re

CRLF = b"\r\n"
LF = b"\n"


def expected_markup(url: str) -> str:
    """The exact pixel markup the contract fixes, built independently of the module."""
    return (
        f'<img src="{html.escape(url, quote=True)}" alt="" width="1" height="1" border="0" '
        'style="height:1px !important;width:1px !important;border-width:0 !important;'
        'margin:0 !important;padding:0 !important" />'
    )


# --------------------------------------------------------------------------------------
# The checker
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Preserved:
    """What assert_preserved established about one injection."""

    path: tuple[int, ...]  # child indexes from the root to the target part
    span: tuple[int, int]  # target body [start, end) in the original bytes
    before: str  # decoded target body of the original
    after: str  # decoded target body of the result
    pos: int  # index in `before` where the markup went


def parse(raw: bytes) -> email.message.Message:
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def displayed_html_paths(
    msg: email.message.Message, path: tuple[int, ...] = (), top_level: bool = True
) -> list[tuple[int, ...]]:
    """Reference selection over the email tree: the HTML parts a client shows, in order."""
    disposition = msg.get_content_disposition()
    if disposition == "attachment" or (disposition is None and not top_level and msg.get_filename()):
        return []
    ctype = msg.get_content_type()
    if ctype == "text/html":
        return [path]
    children = msg.get_payload()
    if not ctype.startswith("multipart/") or not isinstance(children, list) or not children:
        return []  # leaves, message/* (never descended into), multiparts without parts
    subtype = msg.get_content_subtype()
    if subtype == "alternative":
        for i in reversed(range(len(children))):
            found = displayed_html_paths(children[i], (*path, i), False)
            if found:
                return found
        return []
    if subtype == "related":
        order = list(range(len(children)))
        start = msg.get_param("start")
        if isinstance(start, str):
            order.sort(key=lambda i: str(children[i].get("Content-ID", "")).strip() != start.strip())
        for i in order:
            found = displayed_html_paths(children[i], (*path, i), False)
            if found:
                return found
        return []
    if subtype == "signed":
        return displayed_html_paths(children[0], (*path, 0), False)
    if subtype == "encrypted":
        return []
    return [p for i, child in enumerate(children) for p in displayed_html_paths(child, (*path, i), False)]


def reference_target(raw: bytes, top: bool = False) -> tuple[int, ...] | None:
    paths = displayed_html_paths(parse(raw))
    if not paths:
        return None
    return paths[0] if top else paths[-1]


def node_at(msg: email.message.Message, path: tuple[int, ...]) -> email.message.Message:
    for i in path:
        msg = msg.get_payload()[i]
    return msg


def _body_start(raw: bytes, start: int, end: int) -> int:
    """First byte after the header block of the part at [start, end): after the first empty line."""
    if raw.startswith(b"\r\n", start):
        return start + 2
    if raw.startswith(b"\n", start):
        return start + 1
    m = re.compile(rb"\r?\n\r?\n").search(raw, start, end)
    return m.end() if m else end


def _child_regions(raw: bytes, start: int, end: int, boundary: str) -> list[tuple[int, int]]:
    """Body part byte ranges of one multipart body, by RFC 2046 delimiter lines."""
    delimiter = re.compile(rb"^--" + re.escape(boundary.encode("latin-1")) + rb"(--)?[ \t]*\r?$", re.M)
    regions, part_start = [], None
    for m in delimiter.finditer(raw, start, end):
        if part_start is not None:
            stop = m.start()
            stop -= 2 if raw[stop - 2 : stop] == b"\r\n" else 1
            regions.append((part_start, max(part_start, stop)))
        if m.group(1):
            return regions
        part_start = m.end() + (1 if raw[m.end() : m.end() + 1] == b"\n" else 0)
    if part_start is not None:
        regions.append((part_start, end))
    return regions


def body_span(raw: bytes, path: tuple[int, ...]) -> tuple[int, int]:
    """Byte range of the body of the part at *path*, found without the injector's walker."""
    msg, start, end = parse(raw), 0, len(raw)
    for i in path:
        regions = _child_regions(raw, _body_start(raw, start, end), end, msg.get_boundary())
        start, end = regions[i]
        msg = msg.get_payload()[i]
    return _body_start(raw, start, end), end


def decoded_payload(part: email.message.Message) -> bytes:
    """get_payload(decode=True), plus tolerance for bogus labels such as 'quoted-printable;'."""
    label = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    token = re.match(r"[a-z0-9-]*", label).group()
    data = part.get_payload(decode=True)
    if token != label:  # the email package only decodes exact names; clients are laxer
        if token == "quoted-printable":
            data = quopri.decodestring(data)
        elif token == "base64":
            compact = b"".join(data.split())
            data = base64.b64decode(compact + b"=" * (-len(compact) % 4))
    return data


def as_text(data: bytes, charset: str | None) -> str:
    if charset:
        try:
            return data.decode(charset)
        except (LookupError, UnicodeDecodeError):
            pass
    return data.decode("latin-1")


def _common_prefix(a: bytes, b: bytes) -> int:
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:  # binary search with C-speed slice comparisons
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def line_endings(data: bytes) -> tuple[int, int]:
    """(CRLF count, bare LF count)."""
    crlf = data.count(b"\r\n")
    return crlf, data.count(b"\n") - crlf


def assert_preserved(original: bytes, result: bytes, pixel_url: str, *, top: bool = False) -> Preserved:
    """Check mechanically that *result* is *original* with one pixel added to the right part.

    (a) every byte outside the target part's body is unchanged; (b) the decoded target equals
    the original with the markup inserted once (a line break may sit next to it); (c) the
    target's Content-Transfer-Encoding and charset are unchanged; (d) its line-ending style
    is kept; (e) the pixel URL appears once, only there, and every other part decodes as before.
    """
    markup = expected_markup(pixel_url)
    path = reference_target(original, top)
    assert path is not None, "the original has no HTML part a client would show"
    bs, be = body_span(original, path)
    tail = len(original) - be

    # (a) the diff (common prefix + common suffix) lies inside the target body span
    assert len(result) > len(original)
    assert result[:bs] == original[:bs], "bytes before the target body changed"
    assert result[len(result) - tail :] == original[be:], "bytes after the target body changed"
    # The changed window (common prefix + common suffix); when the inserted text happens to
    # repeat bytes next to it the split is ambiguous, so both sides are capped at the span.
    prefix = min(_common_prefix(original, result), be)
    suffix = min(_common_prefix(original[::-1], result[::-1]), len(original) - prefix, len(original) - bs)
    assert bs <= prefix and len(original) - suffix <= be

    orig_msg, res_msg = parse(original), parse(result)
    o_part, r_part = node_at(orig_msg, path), node_at(res_msg, path)
    assert r_part.get_content_type() == "text/html"

    # (c) encoding headers unchanged
    for name in ("Content-Type", "Content-Transfer-Encoding", "Content-Disposition"):
        assert r_part.get(name) == o_part.get(name)
    charset = o_part.get_content_charset()
    assert r_part.get_content_charset() == charset

    # (b) decoded target = original + markup once (optionally with a line break beside it)
    before = as_text(decoded_payload(o_part), charset)
    after = as_text(decoded_payload(r_part), charset)
    escaped_url = html.escape(pixel_url, quote=True)
    assert escaped_url not in before, "pick a pixel URL that the original does not contain"
    assert after.count(escaped_url) == 1 and after.count(markup) == 1
    i = after.index(markup)
    head, rest = after[:i], after[i + len(markup) :]
    matches = [
        len(head) - len(pre)
        for pre in ("", "\r\n", "\n")
        for post in ("", "\r\n", "\n")
        if head.endswith(pre)
        and rest.startswith(post)
        and head[: len(head) - len(pre)] + rest[len(post) :] == before
    ]
    assert matches, "decoded target is not the original plus the markup"
    pos = matches[0]

    # (d) line endings: the target body keeps its style (CRLF stays CRLF, LF stays LF)
    o_body, r_body = original[bs:be], result[bs : len(result) - tail]
    style_source = o_body if b"\n" in o_body else original
    o_crlf, o_bare = line_endings(style_source)
    r_crlf, r_bare = line_endings(r_body)
    if o_bare == 0 and o_crlf:
        assert r_bare == 0, "a bare LF was introduced into a CRLF body"
    if o_crlf == 0 and o_bare:
        assert r_crlf == 0, "a CRLF was introduced into an LF body"

    # (e) nothing else changed: same structure, same headers, same decoded payloads
    o_all, r_all = list(orig_msg.walk()), list(res_msg.walk())
    assert len(o_all) == len(r_all)
    for o, r in zip(o_all, r_all, strict=True):
        assert o.items() == r.items()
        if o is o_part:
            assert r is r_part
            continue
        if o.is_multipart():
            assert (o.preamble, o.epilogue) == (r.preamble, r.epilogue)
        else:
            assert o.get_payload(decode=True) == r.get_payload(decode=True)
    assert result.count(escaped_url.encode()) <= 1
    return Preserved(path, (bs, be), before, after, pos)


# --------------------------------------------------------------------------------------
# Message builders
# --------------------------------------------------------------------------------------


def leaf(ctype: str, body: bytes, *, cte: str | None = None, extra: tuple[str, ...] = (), eol=CRLF) -> bytes:
    """One MIME part: header block, empty line, body."""
    lines = [f"Content-Type: {ctype}"] if ctype else []
    if cte is not None:
        lines.append(f"Content-Transfer-Encoding: {cte}")
    lines.extend(extra)
    return b"".join(line.encode() + eol for line in lines) + eol + body


def multi(subtype: str, *parts: bytes, boundary: str = "b1", eol=CRLF, extra: tuple[str, ...] = ()) -> bytes:
    """A multipart part with the given children and a close delimiter."""
    out = leaf(f'multipart/{subtype}; boundary="{boundary}"', b"", extra=extra, eol=eol)
    for part in parts:
        out += b"--" + boundary.encode() + eol + part + eol
    return out + b"--" + boundary.encode() + b"--" + eol


def message(part: bytes, *, eol=CRLF, extra: tuple[str, ...] = ()) -> bytes:
    """A top-level message: envelope-ish headers followed by the part's own headers."""
    headers = ["From: a@example.com", "To: b@example.com", "Subject: test", "MIME-Version: 1.0", *extra]
    return b"".join(h.encode() + eol for h in headers) + part


def html_message(body: bytes, *, charset: str | None = "utf-8", cte: str | None = "8bit", eol=CRLF) -> bytes:
    ctype = "text/html" + (f"; charset={charset}" if charset else "")
    return message(leaf(ctype, body, cte=cte, eol=eol), eol=eol)


def strip_dkim(raw: bytes) -> bytes:
    """Cut every DKIM-Signature field (with its folded lines) out of the top-level header block."""
    blank = re.search(rb"\r?\n\r?\n", raw)
    end = blank.start() + (2 if raw.startswith(b"\r\n", blank.start()) else 1) if blank else len(raw)
    header = re.sub(rb"(?im)^dkim-signature[ \t]*:[^\n]*\n(?:[ \t][^\n]*\n)*", b"", raw[:end])
    return header + raw[end:]


def wrap_html(raw: bytes, cte: str) -> bytes:
    """A single-part text/html message around the template bytes, in the given encoding."""
    if cte == "8bit":
        return message(leaf("text/html; charset=utf-8", raw, cte="8bit", eol=b"\n"), eol=b"\n")
    if cte == "quoted-printable":
        body = binascii.b2a_qp(raw).replace(b"\n", b"\r\n")
    else:
        body = base64.encodebytes(raw).replace(b"\n", b"\r\n")
    return message(leaf("text/html; charset=utf-8", body, cte=cte))
