"""Case 3: pixel injection throughput, MB/s of `opentracking.mail.injection.inject` against two injectors
written here, over the shared corpus (`../shared/corpus` or $OPENTRACKING_CORPUS: mime/ as is, html/
wrapped in a message) and synthetic messages of 5 KB, 50 KB, 500 KB and 5 MB:

- email round trip: parse with the standard `email` package, put the pixel before `</body>` of the HTML
  body it picks, serialise the message again;
- parse and serialise: the same, with the HTML itself parsed and serialised by BeautifulSoup.

Every approach's output is checked on the same inputs by an independent reading (stdlib `email`): exactly
one pixel, in the HTML part a client shows, and none in signed, encrypted or DKIM-signed messages.
Targets: >= 3x the email round trip, >= 20x parse-and-serialise.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.message
import email.policy
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.env import ROOT
from bench.report import at_least, row
from bench.timing import median, repeated
from opentracking.mail.injection import inject, pixel_markup

URL = "https://email.example.com/o/BenchPixelToken0123456789abcdefABCDEF"
MARKUP = pixel_markup(URL)
SYNTHETIC_SIZES = {"5 KB": 5_000, "50 KB": 50_000, "500 KB": 500_000, "5 MB": 5_000_000}
EMAIL_TARGET, SOUP_TARGET = 3.0, 20.0
_ENCRYPTED = {"multipart/encrypted", "application/pkcs7-mime", "application/x-pkcs7-mime"}


def corpus_dir() -> Path | None:
    path = Path(os.environ.get("OPENTRACKING_CORPUS") or ROOT.parent / "shared" / "corpus")
    return path if (path / "html").is_dir() and (path / "mime").is_dir() else None


# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------

_HEAD = """<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml" xmlns:o="urn:schemas-microsoft-com:office:office">
<head>
<meta http-equiv="Content-Type" content="text/html; charset=utf-8" />
<meta name="viewport" content="width=device-width, initial-scale=1.0" />
<title>Your weekly digest</title>
<!--[if mso]><xml><o:OfficeDocumentSettings><o:PixelsPerInch>96</o:PixelsPerInch>
</o:OfficeDocumentSettings></xml><![endif]-->
<style type="text/css">
body { margin: 0; padding: 0; } table, td { border-collapse: collapse; }
.button a { background: #1a73e8; color: #ffffff; padding: 12px 24px; border-radius: 4px; }
@media only screen and (max-width: 600px) { .container { width: 100% !important; } }
</style>
</head>
<body style="margin:0;padding:0;background-color:#f4f4f4;">
<center><table role="presentation" class="container" width="600" cellpadding="0" cellspacing="0" border="0">
"""
_ROW = """<tr><td style="padding:24px;font-family:Arial,sans-serif;font-size:16px;line-height:24px;
color:#333333;">
<h2 style="margin:0 0 12px 0;">Story {n}: caf\u00e9 news &amp; updates</h2>
<p style="margin:0 0 12px 0;">Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod
tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation
ullamco laboris.</p>
<!--[if mso]><table><tr><td width="200"><![endif]-->
<a href="https://www.example.com/articles/{n}?utm_source=newsletter&amp;utm_medium=email"><img
 src="https://cdn.example.com/img/{n}.jpg" width="200" height="120" alt="Story {n}"
 style="display:block;border:0;" /></a>
<!--[if mso]></td></tr></table><![endif]-->
<div class="button"><a href="https://www.example.com/articles/{n}">Read more</a></div>
</td></tr>
"""
_TAIL = """</table></center>
<!-- footer: unsubscribe </body> inside a comment is not the end -->
<p style="font-size:12px;color:#999999;">You receive this because you subscribed. <a href="https://www.example.com/u">Unsubscribe</a></p>
</body>
</html>
"""


def synthetic_html(size: int) -> str:
    """A newsletter-shaped HTML document (tables, inline styles, Outlook conditionals) of about `size`
    characters."""
    rows = []
    n = 0
    length = len(_HEAD) + len(_TAIL)
    while length < size or not rows:
        rows.append(_ROW.format(n=n))
        length += len(rows[-1])
        n += 1
    return _HEAD + "".join(rows) + _TAIL


def wrap(html: bytes, *, charset: str = "utf-8") -> bytes:
    """What a sending library produces: multipart/alternative, text/plain then quoted-printable HTML."""
    boundary = b"=_bench_alt_0123456789"
    qp = binascii.b2a_qp(html).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return b"\r\n".join(
        [
            b"From: Sender <sender@example.com>",
            b"To: reader@example.net",
            b"Subject: Your weekly digest",
            b"Date: Thu, 26 Nov 2026 12:00:00 +0000",
            b"Message-ID: <20261126120000.bench@example.com>",
            b"MIME-Version: 1.0",
            b'Content-Type: multipart/alternative; boundary="' + boundary + b'"',
            b"",
            b"--" + boundary,
            b"Content-Type: text/plain; charset=utf-8",
            b"Content-Transfer-Encoding: 7bit",
            b"",
            b"Your weekly digest. Read it online at https://www.example.com/digest",
            b"--" + boundary,
            b"Content-Type: text/html; charset=" + charset.encode(),
            b"Content-Transfer-Encoding: quoted-printable",
            b"",
            qp,
            b"--" + boundary + b"--",
            b"",
        ]
    )


@dataclass(frozen=True)
class Input:
    name: str
    group: str  # "corpus" or "synthetic"
    data: bytes


def inputs(*, tiny: bool) -> tuple[list[Input], str | None]:
    """The inputs, and why the corpus is missing when it is."""
    found: list[Input] = []
    sizes = {"5 KB": SYNTHETIC_SIZES["5 KB"]} if tiny else SYNTHETIC_SIZES
    for label, size in sizes.items():
        # Quoted-printable adds soft line breaks and a few escapes: about 8% here.
        html = synthetic_html(int(size / 1.08)).encode()
        found.append(Input(f"synthetic {label}", "synthetic", wrap(html)))
    corpus = corpus_dir()
    if corpus is None:
        return found, (
            f"corpus skipped: no html/ and mime/ under {ROOT.parent / 'shared' / 'corpus'} "
            "(set OPENTRACKING_CORPUS to its location)"
        )
    mime = sorted(p for p in (corpus / "mime").iterdir() if p.is_file())
    html = sorted(p for p in (corpus / "html").iterdir() if p.is_file())
    if tiny:
        mime, html = mime[:2], html[:1]
    found += [Input(f"mime/{p.name}", "corpus", p.read_bytes()) for p in mime]
    found += [Input(f"html/{p.name}", "corpus", wrap(p.read_bytes())) for p in html]
    return found, None


# --------------------------------------------------------------------------------------
# The two baselines
# --------------------------------------------------------------------------------------


def _insert_before_body_end(html: str, markup: str) -> str:
    pos = html.lower().rfind("</body")
    return html[:pos] + markup + html[pos:] if pos != -1 else html + markup


def _html_part(message: email.message.EmailMessage):
    return message.get_body(preferencelist=("html",))


def _replace_html(part, html: str) -> None:
    charset = part.get_content_charset() or "utf-8"
    try:
        "".encode(charset)
    except LookupError:
        charset = "utf-8"
    part.set_content(html, subtype="html", charset=charset, cte="quoted-printable")


def email_round_trip(raw: bytes, url: str) -> bytes:
    """Parse with `email`, insert before </body>, serialise: what most code that 'adds a pixel' does."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    part = _html_part(message)
    if part is None:
        return raw
    _replace_html(part, _insert_before_body_end(part.get_content(), pixel_markup(url)))
    return message.as_bytes()


def soup_round_trip(raw: bytes, url: str) -> bytes:
    """The email round trip with the HTML parsed and serialised by BeautifulSoup (html.parser)."""
    from bs4 import BeautifulSoup

    message = email.message_from_bytes(raw, policy=email.policy.default)
    part = _html_part(message)
    if part is None:
        return raw
    soup = BeautifulSoup(part.get_content(), "html.parser")
    pixel = soup.new_tag(
        "img",
        attrs={
            "src": url,
            "alt": "",
            "width": "1",
            "height": "1",
            "border": "0",
            "style": "height:1px !important;width:1px !important;border-width:0 !important",
        },
    )
    (soup.body or soup).append(pixel)
    _replace_html(part, str(soup))
    return message.as_bytes()


def library(raw: bytes, url: str) -> bytes:
    return inject(raw, url).message


APPROACHES: dict[str, Callable[[bytes, str], bytes]] = {
    "inject": library,
    "email round trip": email_round_trip,
    "parse and serialise (bs4)": soup_round_trip,
}


# --------------------------------------------------------------------------------------
# The independent check
# --------------------------------------------------------------------------------------


def _is_attachment(part, top_level: bool) -> bool:
    disposition = part.get_content_disposition()
    return disposition == "attachment" or (
        disposition is None and not top_level and part.get_filename() is not None
    )


def displayed_html(part, top_level: bool = True, path: tuple = ()) -> list[tuple]:
    """Paths (root ... leaf) to the HTML leaves a mail client shows, in display order (DESIGN.md 3.3),
    read with the stdlib parser."""
    if _is_attachment(part, top_level):
        return []
    path = (*path, part)
    ctype = part.get_content_type()
    if ctype == "text/html":
        return [path]
    if not ctype.startswith("multipart/") or not isinstance(part.get_payload(), list):
        return []  # leaves, and message/rfc822 (an attached message is never a target)
    children = part.get_payload()
    subtype = part.get_content_subtype()
    if subtype == "alternative":
        for child in reversed(children):
            if found := displayed_html(child, False, path):
                return found
        return []
    if subtype == "related":
        start = (part.get_param("start") or "").strip()
        roots = [c for c in children if start and (c.get("content-id") or "").strip() == start] or children[
            :1
        ]
        return displayed_html(roots[0], False, path) or next(
            (found for c in children if (found := displayed_html(c, False, path))), []
        )
    if subtype == "signed":
        return displayed_html(children[0], False, path) if children else []
    if subtype == "encrypted":
        return []
    return [leaf for child in children for leaf in displayed_html(child, False, path)]


def _outside_attached_messages(part):
    """Every part, not descending into attached messages (message/rfc822 is opaque)."""
    yield part
    if part.get_content_type().startswith("multipart/") and isinstance(part.get_payload(), list):
        for child in part.get_payload():
            yield from _outside_attached_messages(child)


def _must_not_touch(message, target_path: tuple) -> bool:
    if any(p.get_content_type() in _ENCRYPTED for p in _outside_attached_messages(message)):
        return True
    if any(p.get_content_type() == "multipart/signed" for p in target_path):
        return True
    return message.get("DKIM-Signature") is not None


def _decoded(part) -> bytes:
    """The part's body decoded from its transfer encoding, read leniently (`quoted-printable;` is still
    quoted-printable to a mail client, though the stdlib leaves it encoded)."""
    data = part.get_payload(decode=True) or b""
    cte = str(part.get("content-transfer-encoding", "")).strip().lower()
    if cte in ("quoted-printable", "base64"):
        return data  # decoded by the stdlib
    if "quoted-printable" in cte:
        return binascii.a2b_qp(data)
    if "base64" in cte:
        try:
            return base64.b64decode(data.translate(None, b" \t\r\n") + b"==", validate=False)
        except binascii.Error:
            return data
    return data


def _pixels(part) -> int:
    payload = _decoded(part)
    if not payload:
        return 0
    charset = (part.get_content_charset() or "").lower()
    if charset.startswith(("utf-16", "utf-32", "ucs", "unicode")):
        try:
            return payload.decode(charset, "replace").count(URL)
        except LookupError:
            pass
    return payload.count(URL.encode())


def check(original: bytes, output: bytes) -> str | None:
    """None if the output has exactly one pixel where a client shows HTML (none where nothing may be
    touched or nothing is shown); otherwise what is wrong."""
    before = email.message_from_bytes(original, policy=email.policy.compat32)
    after = email.message_from_bytes(output, policy=email.policy.compat32)
    leaves = [p for p in after.walk() if not p.is_multipart()]
    total = sum(_pixels(p) for p in leaves)
    shown_before = displayed_html(before)
    if not shown_before or _must_not_touch(before, shown_before[-1]):
        return None if total == 0 else f"{total} pixel(s) where none may go (signed, encrypted or no HTML)"
    shown = displayed_html(after)
    target = shown[-1][-1] if shown else None
    if total != 1:
        return f"{total} pixels"
    if target is None or _pixels(target) != 1:
        return "pixel not in the HTML part a client shows"
    return None


# --------------------------------------------------------------------------------------
# The case
# --------------------------------------------------------------------------------------


def run(*, tiny: bool = False) -> dict:
    items, skipped = inputs(tiny=tiny)
    per_input: list[dict] = []
    mismatches: list[dict] = []
    for item in items:
        entry = {"name": item.name, "group": item.group, "bytes": len(item.data), "approaches": {}}
        injected = False
        for approach, injector in APPROACHES.items():
            try:
                output = injector(item.data, URL)
                problem = check(item.data, output)
            except Exception as exc:  # a baseline that crashes on real mail is a finding, not a bench bug
                output, problem = None, f"failed: {type(exc).__name__}: {str(exc)[:120]}"
            if approach == "inject":
                injected = output is not None and output != item.data
            if problem:
                mismatches.append({"input": item.name, "approach": approach, "problem": problem})
            timing = None
            if output is not None:
                big = len(item.data) > 1_000_000
                budget = 0.01 if tiny else (0.6 if item.group == "synthetic" else 0.12)
                timing = repeated(
                    lambda f=injector, d=item.data: f(d, URL),
                    budget_s=budget,
                    max_reps=2 if big and tiny else 200,
                )
            entry["approaches"][approach] = {
                "problem": problem,
                "cpu_s": None if timing is None else median(timing["cpu_s"]),
                "reps": 0 if timing is None else len(timing["cpu_s"]),
            }
        entry["injected"] = injected
        per_input.append(entry)

    def throughput(entries: list[dict], approach: str) -> float | None:
        timed = [e for e in entries if e["approaches"][approach]["cpu_s"]]
        if not timed:
            return None
        return sum(e["bytes"] for e in timed) / sum(e["approaches"][approach]["cpu_s"] for e in timed) / 1e6

    rows = []
    groups: list[tuple[str, list[dict]]] = []
    # Throughput is compared where inject() does the whole job (it returns early, cheaply, on signed mail).
    comparable = [e for e in per_input if e["injected"] and all(a["cpu_s"] for a in e["approaches"].values())]
    corpus = [e for e in comparable if e["group"] == "corpus"]
    if corpus:
        groups.append(
            (f"corpus ({len(corpus)} messages, {sum(e['bytes'] for e in corpus) / 1e6:.1f} MB)", corpus)
        )
    groups += [(e["name"], [e]) for e in comparable if e["group"] == "synthetic"]
    for label, entries in groups:
        ours = throughput(entries, "inject")
        for approach, target in (
            ("email round trip", EMAIL_TARGET),
            ("parse and serialise (bs4)", SOUP_TARGET),
        ):
            theirs = throughput(entries, approach)
            ratio = ours / theirs if ours and theirs else None
            note = ""
            if len(entries) > 1:
                speedups = sorted(
                    (e["approaches"][approach]["cpu_s"] / e["approaches"]["inject"]["cpu_s"], e["name"])
                    for e in entries
                )
                slowest = speedups[0]
                note = (
                    f"per message: median {median([x for x, _ in speedups]):.1f}x, "
                    f"lowest {slowest[0]:.1f}x ({slowest[1]})"
                )
            rows.append(
                row(
                    "injection",
                    f"{label}: inject vs {approach}",
                    ours,
                    "MB/s",
                    baseline=theirs,
                    ratio=ratio,
                    target=f">= {target:g}x",
                    met=at_least(ratio, target),
                    note=note,
                )
            )
    by_approach = {name: sum(m["approach"] == name for m in mismatches) for name in APPROACHES}
    for name, count in by_approach.items():
        rows.append(
            row(
                "injection",
                f"correctness mismatches: {name}",
                count,
                f"of {len(items)}",
                target="0" if name == "inject" else None,
                met=(count == 0) if name == "inject" else None,
            )
        )
    if skipped:
        rows.append(row("injection", skipped, 0, "", note="skipped"))
    return {"rows": rows, "raw": {"inputs": per_input, "mismatches": mismatches, "corpus_skipped": skipped}}
