"""Unsubscribe links over the shared corpus of real MIME messages and HTML templates, under the injector's
byte rules: read in place from ``../shared/corpus`` (without it, this tier says so and is skipped).

The checks do not trust the code under test: the stdlib ``email`` package and the tests' own boundary
splitter find the parts; every part that changed must be a displayed text part whose decoded body is the
original plus the footer (or the original with its placeholders filled in), in the same transfer encoding;
every byte outside the changed bodies, and outside the two header lines put at the top, is kept."""

from __future__ import annotations

import codecs
import email.message

import pytest

from opentracking.mail.injection import DKIM_SIGNED
from opentracking.mail.unsubscribe import ALL, add_links
from tests.helpers.corpus import CORPUS, names, require_corpus, untouched
from tests.helpers.mime import body_span, decoded_payload, parse, strip_dkim, wrap_html

pytestmark = pytest.mark.corpus

require_corpus()

MIME_FILES = names("mime")
HTML_FILES = names("html")
URLS = {"all": "https://email.example.com/u/ALLTOKEN", "tag": "https://email.example.com/u/TAGTOKEN"}
HTML_FOOTER = '\n<br>\n<p><a href="%unsubscribe_url%">unsubscribe</a></p>\n'
TEXT_FOOTER = "\n\nTo unsubscribe click: <%unsubscribe_url%>\n\n"
# Messages that must come back untouched, and why (signed or DKIM-signed).
UNTOUCHED = untouched()


def leaves(
    msg: email.message.Message, path: tuple[int, ...] = ()
) -> list[tuple[tuple[int, ...], email.message.Message]]:
    if msg.is_multipart() and msg.get_content_maintype() == "multipart":
        return [leaf for i, child in enumerate(msg.get_payload()) for leaf in leaves(child, (*path, i))]
    return [(path, msg)]


def text_of(data: bytes, part: email.message.Message) -> str:
    charset = part.get_content_charset() or "utf-8"
    try:
        codec = codecs.lookup(charset).name
    except LookupError:
        codec = "latin-1"
    return data.decode(codec, "replace")


def unfilled(text: str) -> str:
    """The links put back as the placeholders they stand for."""
    return text.replace(URLS["all"], "%unsubscribe_url%").replace(URLS["tag"], "%tag_unsubscribe_url%")


def without_footer(text: str, footer: str) -> str | None:
    for eol in ("\r\n", "\n"):
        candidate = footer.replace("\n", eol)
        if candidate in text:
            return text.replace(candidate, "", 1)
        # a part with no closing boundary: the parser drops the body's last line break, before the footer
        # was added and after
        if text.endswith(candidate.removesuffix(eol)):
            return text.removesuffix(candidate.removesuffix(eol)).removesuffix(eol)
    return None


def check(raw: bytes, result) -> int:
    """The result is raw plus its links and nothing else; returns how many parts changed."""
    assert result.linked
    after = result.message
    if b"list-unsubscribe:" not in raw.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0].lower():
        eol = b"\r\n" if after.startswith(b"List-Unsubscribe: <" + URLS[ALL].encode() + b">\r\n") else b"\n"
        added = (
            b"List-Unsubscribe: <"
            + URLS[ALL].encode()
            + b">"
            + eol
            + b"List-Unsubscribe-Post: List-Unsubscribe=One-Click"
            + eol
        )
        assert after.startswith(added)
        after = after[len(added) :]
    old_leaves, new_leaves = leaves(parse(raw)), leaves(parse(after))
    assert [p for p, _ in old_leaves] == [p for p, _ in new_leaves]
    changed, cursor_old, cursor_new = 0, 0, 0
    for (path, old), (_, new) in zip(old_leaves, new_leaves, strict=True):
        assert old.items() == new.items(), path  # headers, transfer encoding included
        before, now = decoded_payload(old), decoded_payload(new)
        if before == now:
            continue
        changed += 1
        assert old.get_content_type() in ("text/html", "text/plain"), path
        original, edited = text_of(before, old), unfilled(text_of(now, new))
        if edited != original:
            footer = HTML_FOOTER if old.get_content_type() == "text/html" else TEXT_FOOTER
            assert without_footer(edited, footer) == original, path
        # every byte between the changed bodies is the original's
        old_start, old_end = body_span(raw, path)
        new_start, new_end = body_span(after, path)
        assert raw[cursor_old:old_start] == after[cursor_new:new_start], path
        cursor_old, cursor_new = old_end, new_end
    assert raw[cursor_old:] == after[cursor_new:]
    return changed


def url_for(scope: str) -> str:
    return URLS[scope]


@pytest.mark.parametrize("name", MIME_FILES)
def test_corpus_message_gains_only_its_unsubscribe_links(name):
    raw = (CORPUS / "mime" / name).read_bytes()
    result = add_links(raw, url_for, html_footer=HTML_FOOTER, text_footer=TEXT_FOOTER)
    if name in UNTOUCHED:
        assert (result.message, result.linked, result.reason) == (raw, False, UNTOUCHED[name])
        return
    if not result.linked:
        assert result.message == raw and result.reason
        return
    assert check(raw, result) >= 1


@pytest.mark.parametrize("name", sorted(n for n, reason in UNTOUCHED.items() if reason == DKIM_SIGNED))
def test_corpus_message_without_its_dkim_signature(name):
    raw = strip_dkim((CORPUS / "mime" / name).read_bytes())
    assert check(raw, add_links(raw, url_for, html_footer=HTML_FOOTER, text_footer=TEXT_FOOTER)) >= 1


@pytest.mark.parametrize("cte", ["8bit", "quoted-printable", "base64"])
@pytest.mark.parametrize("name", HTML_FILES)
def test_corpus_html_in_each_transfer_encoding(name, cte):
    raw = wrap_html((CORPUS / "html" / name).read_bytes(), cte)
    result = add_links(raw, url_for, html_footer=HTML_FOOTER, text_footer=TEXT_FOOTER)
    assert check(raw, result) == 1


def test_most_of_the_corpus_takes_the_links():
    linked = sum(
        add_links(
            (CORPUS / "mime" / n).read_bytes(), url_for, html_footer=HTML_FOOTER, text_footer=TEXT_FOOTER
        ).linked
        for n in MIME_FILES
    )
    assert linked >= (len(MIME_FILES) - len(UNTOUCHED)) * 0.8
