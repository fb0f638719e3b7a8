"""Pixel injection over the shared corpus of real HTML templates and MIME messages.

The corpus lives next to the repository in ``../shared/corpus`` (or wherever
``OPENTRACKING_CORPUS`` points); see its SOURCES.md for what each file exercises.  Files
are read in place and never copied into the repository.  Every MIME file has an explicit
expected outcome below, checked for both bottom and top placement.
"""

from __future__ import annotations

import re
import time

import pytest

from opentracking.mail.injection import (
    DKIM_SIGNED,
    NO_HTML_PART,
    SIGNED,
    InjectionResult,
    inject,
    inject_html,
)
from tests.helpers.corpus import CORPUS, names, require_corpus
from tests.helpers.mime import assert_preserved, expected_markup, strip_dkim, wrap_html

pytestmark = pytest.mark.corpus

require_corpus()


URL = "https://pixel.test.invalid/o/CorpusToken123?m=1&r=2"
HTML_FILES = names("html")
MIME_FILES = names("mime")

# Messages that must come back unchanged, with the reason (each checked by reading the file).
NOT_INJECTED = {
    # HTML only inside the attached message/rfc822; it also has a top-level DKIM-Signature,
    # but having no HTML to track is the more fundamental reason.
    "flanker__enclosed-rfc822.eml": NO_HTML_PART,
    "flanker__missing-final-boundary.eml": NO_HTML_PART,  # alternative[text/plain], no close delimiter
    "flanker__torture.eml": NO_HTML_PART,  # richtext, audio, images, attached messages: no text/html
    "mikel__basic-text-only.eml": NO_HTML_PART,
    "mimekit__tnef-koi8r.eml": NO_HTML_PART,  # the HTML is hidden in the winmail.dat TNEF attachment
    "mimekit__multipart-no-end-boundary.eml": DKIM_SIGNED,
    "nodemailer__watch-html.eml": DKIM_SIGNED,
    "phpmmp__x-mac-cyrillic-html.eml": DKIM_SIGNED,  # spelled "dkim-signature:"
    "spamscope__fr-newsletter-related.eml": DKIM_SIGNED,
    "stalwart-dovecot__signed-alternative-html-first.eml": SIGNED,  # mixed[signed[alternative[html...]]]
    "webklex__pec-smime-signed.eml": SIGNED,  # S/MIME multipart/signed (Italian PEC)
}

# Messages that must be injected, with the path (child indexes) of the part that gets the pixel.
INJECTED = {
    "enmime__bad-charset-inline.eml": (1, 0),  # alternative[text, related[html, png]]
    "enmime__html-no-closing-boundary.eml": (0,),  # mixed[html QP], no close delimiter
    "enmime__unk-charset-html-only.eml": (),  # single-part text/html fragment
    "flanker__relative-fragment.eml": (1,),
    "letters__japanese-related-iso2022jp-b64.eml": (0, 2),  # related[alternative[text, enriched, html]]
    "letters__polish-mixed-iso88592-b64.eml": (0, 0, 2),  # not the text/html ATTACHMENT at the end
    "mailpit__inline-attachment.eml": (0,),
    "mikel__7-bit-nobody.eml": (1,),
    "mikel__cte-qp-semicolon.eml": (1,),
    "mikel__illegal-boundary.eml": (1,),
    "mikel__windows-1251-html.eml": (1,),
    "mime4j__boundary-name-clash.eml": (0, 1),
    "mimekit__body7-mixed-related-alt.eml": (0, 0, 0),  # html FIRST in the alternative
    "nodemailer__htmllargecallstack.eml": (),
    "phpmmp__300-attachments.eml": (0,),
    "phpmmp__gmail-1500kb-attachment.eml": (0, 1),
    "phpmmp__related-cid-gifs.eml": (0, 0, 1),
    "spamassassin__badmime-binary-html.eml": (1,),
    "spamassassin__media_unspun.eml": (1,),
    "spamassassin__netcenter-direct_de.eml": (1,),
    "spamassassin__spam-006-html-only.eml": (),
    "spamassassin__winxpnews.eml": (),
    "stalwart-dovecot__malformed-related-8bit.eml": (0, 0),
    "talon__android-base64-html.eml": (1,),
    "talon__outlook-reply.eml": (1,),
    "webklex__embedded_email_without_cd.eml": (0, 0, 1),  # outer html, not the one in the rfc822
    "webklex__html_only.eml": (),
    "webklex__multipart_without_body.eml": (1,),
}

# The same messages with their top-level DKIM-Signature field(s) cut out, so that the walker
# still runs on them: expected target path, or the reason for still not injecting.
WITHOUT_DKIM = {
    "flanker__enclosed-rfc822.eml": NO_HTML_PART,
    "mimekit__multipart-no-end-boundary.eml": (1,),
    "nodemailer__watch-html.eml": (0, 2, 0),  # mixed[alternative[text, watch-html, related[html]]]
    "phpmmp__x-mac-cyrillic-html.eml": (1,),
    "spamscope__fr-newsletter-related.eml": (1, 0),
}

PLACEMENTS = [pytest.param(False, id="bottom"), pytest.param(True, id="top")]
_WS = " \t\r\n\f"


def read(sub: str, name: str) -> bytes:
    return (CORPUS / sub / name).read_bytes()


def check_placement(text: str, pos: int, top: bool) -> None:
    """Where the pixel went in *text*, checked with simple independent rules."""
    lower = text.lower()
    comments = [m.span() for m in re.finditer(r"<!--.*?-->", text, re.S)]
    # Never inside a comment, which includes Outlook conditionals <!--[if mso]> ... <![endif]-->.
    assert not any(a < pos < b for a, b in comments), "pixel inside a comment or conditional comment"
    if top:
        opens = list(re.finditer(r"<body\b[^>]*>", lower))
        if len(opens) == 1:
            assert pos == opens[0].end(), "pixel not right after <body>"
        elif not opens:
            prologue = r"(?:\s|<!--.*?-->|<![^>]*>|<\?[^>]*>|<html\b[^>]*>|<head\b[^>]*>.*?</head\s*>)*"
            assert re.fullmatch(prologue, text[:pos], re.S | re.I), "pixel after document content"
        return
    closes = [m.start() for m in re.finditer(r"</body\s*>", lower)]
    html_closes = [m.start() for m in re.finditer(r"</html\s*>", lower)]
    if len(closes) == 1:
        assert pos == closes[0], "pixel not right before </body>"
    elif not closes and len(html_closes) == 1:
        assert pos == html_closes[0], "pixel not right before </html>"
    elif not closes and not html_closes:
        assert pos == len(text.rstrip(_WS)), "pixel not at the end of the content"


# --------------------------------------------------------------------------------------
# MIME messages
# --------------------------------------------------------------------------------------


def test_every_corpus_message_has_an_explicit_expectation():
    # GIVEN the corpus MIME files
    # THEN each is listed exactly once, as injected or as not injected
    assert not set(NOT_INJECTED) & set(INJECTED)
    assert set(MIME_FILES) == set(NOT_INJECTED) | set(INJECTED)
    assert set(WITHOUT_DKIM) <= set(MIME_FILES)


@pytest.mark.parametrize("top", PLACEMENTS)
@pytest.mark.parametrize("name", MIME_FILES)
def test_corpus_message(name, top):
    # GIVEN a real-world message
    raw = read("mime", name)
    # WHEN injecting a pixel
    result = inject(raw, URL, top=top)
    # THEN it is left alone for the expected reason, or injected into the expected part only
    if name in NOT_INJECTED:
        assert result == InjectionResult(raw, False, NOT_INJECTED[name])
        return
    assert result.injected and result.reason is None
    check = assert_preserved(raw, result.message, URL, top=top)
    assert check.path == INJECTED[name]
    check_placement(check.before, check.pos, top)


@pytest.mark.parametrize("top", PLACEMENTS)
@pytest.mark.parametrize("name", sorted(WITHOUT_DKIM))
def test_corpus_message_without_dkim_signature(name, top):
    # GIVEN a DKIM-signed corpus message with its DKIM-Signature field(s) removed
    raw = read("mime", name)
    assert inject(raw, URL).reason in (DKIM_SIGNED, NO_HTML_PART)
    stripped = strip_dkim(raw)
    assert len(stripped) < len(raw)
    assert b"dkim-signature" not in re.split(rb"\r?\n\r?\n", stripped, maxsplit=1)[0].lower()
    # WHEN injecting
    result = inject(stripped, URL, top=top)
    # THEN the walker finds the expected part and preserves everything else
    expected = WITHOUT_DKIM[name]
    if isinstance(expected, str):
        assert result == InjectionResult(stripped, False, expected)
        return
    check = assert_preserved(stripped, result.message, URL, top=top)
    assert check.path == expected
    check_placement(check.before, check.pos, top)


@pytest.mark.parametrize(
    "name",
    [
        "phpmmp__gmail-1500kb-attachment.eml",
        "flanker__torture.eml",
        "nodemailer__htmllargecallstack.eml",
        "spamscope__fr-newsletter-related.eml",
        "phpmmp__300-attachments.eml",
    ],
)
def test_largest_messages_are_fast(name):
    # GIVEN one of the largest corpus messages (DKIM stripped, so the full path runs)
    raw = strip_dkim(read("mime", name))
    # WHEN injecting, best of three runs to ignore scheduler noise
    timings = []
    for top in (False, True, False):
        started = time.perf_counter()
        inject(raw, URL, top=top)
        timings.append(time.perf_counter() - started)
    # THEN it takes well under 100 ms
    assert min(timings) < 0.1, f"{name}: {min(timings) * 1000:.1f} ms"


# --------------------------------------------------------------------------------------
# HTML templates
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("top", PLACEMENTS)
@pytest.mark.parametrize("name", HTML_FILES)
def test_corpus_html(name, top):
    # GIVEN a real-world HTML template (bytes kept via surrogateescape)
    text = read("html", name).decode("utf-8", "surrogateescape")
    # WHEN injecting
    result = inject_html(text, URL, top=top)
    # THEN exactly one pixel is added, in the right place, and nothing else changes
    markup = expected_markup(URL)
    assert result.count(markup) == 1
    pos = result.index(markup)
    assert result[:pos] + result[pos + len(markup) :] == text
    check_placement(text, pos, top)


@pytest.mark.parametrize("top", PLACEMENTS)
@pytest.mark.parametrize("cte", ["8bit", "quoted-printable", "base64"])
@pytest.mark.parametrize("name", HTML_FILES)
def test_corpus_html_in_a_mime_message(name, cte, top):
    # GIVEN a template wrapped as a single-part text/html message
    raw = wrap_html(read("html", name), cte)
    # WHEN injecting
    result = inject(raw, URL, top=top)
    # THEN the part is preserved and the pixel lands where inject_html puts it
    check = assert_preserved(raw, result.message, URL, top=top)
    assert check.path == ()
    assert inject_html(check.before, URL, top=top).index(expected_markup(URL)) == check.pos
    check_placement(check.before, check.pos, top)
