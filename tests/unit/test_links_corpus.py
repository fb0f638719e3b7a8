"""Click-tracking link rewriting over the shared corpus of real HTML templates and MIME messages.

Read in place from ``../shared/corpus`` (or ``OPENTRACKING_CORPUS``), as the injector's corpus tier does;
without it, this tier says so and is skipped. The checks do not trust the rewriter: the stdlib
``html.parser`` and ``email`` packages find the links and the parts on their own, and every rewritten
document is aligned with its original so that only ``href`` values (or, in plain text, the URLs) differ.
"""

from __future__ import annotations

import email
import email.policy
import html
import re
from html.parser import HTMLParser

import pytest

from opentracking.mail.injection import DKIM_SIGNED
from opentracking.mail.links import rewrite, rewrite_html
from tests.helpers.corpus import CORPUS, names, require_corpus, untouched
from tests.helpers.mime import as_text, body_span, decoded_payload, line_endings, parse, strip_dkim, wrap_html

pytestmark = pytest.mark.corpus

require_corpus()


HTML_FILES = names("html")
MIME_FILES = names("mime")
HOST = "track.test.invalid"
MARKER = re.compile(r"https://track\.test\.invalid/c/L(\d+)")
# Messages no link of which may change, and why (checked by reading the files: signed or DKIM-signed).
UNTOUCHED = untouched()


class Recorder:
    """link_url for the rewriter: numbered marker URLs, remembering which original each stands for."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def __call__(self, url: str) -> str:
        self.urls.append(url)
        return f"https://{HOST}/c/L{len(self.urls) - 1}"


def align(original: str, rewritten: str, urls: list[str], *, html_attribute: bool) -> list[str]:
    """Split *rewritten* at the marker URLs and align it with *original*: everything between markers must
    be identical, and each marker must stand where the original had the URL it was issued for. Returns
    the original values that were replaced."""
    pieces = MARKER.split(rewritten)
    texts, numbers = pieces[0::2], [int(n) for n in pieces[1::2]]
    assert numbers == list(range(len(numbers))), "markers out of order or duplicated"
    assert len(numbers) == len(urls)
    values, cursor = [], 0
    for index, piece in enumerate(texts[:-1]):
        assert original.startswith(piece, cursor), f"text before link {index} changed"
        cursor += len(piece)
        following = texts[index + 1]
        end = (
            len(original) - len(following)
            if index + 1 == len(texts) - 1
            else original.find(following, cursor)
        )
        assert end >= cursor, f"text after link {index} changed"
        value = original[cursor:end]
        values.append(value)
        if html_attribute:
            # an href value, right after href= (and its quote)
            assert re.search(r"""href\s*=\s*["']?$""", original[max(0, cursor - 40) : cursor], re.I), value
            cleaned = re.sub(r"[\t\n\r]", "", html.unescape(value).strip(" \t\n\r\f"))
            assert urls[index] == cleaned or "&" in value, (urls[index], value)
        else:
            assert value == urls[index]
        cursor = end
    assert original.endswith(texts[-1]) and cursor + len(texts[-1]) == len(original)
    return values


class Links(HTMLParser):
    """The trackable links a browser sees in real markup (comments and scripts are not markup)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in ("a", "area"):
            return
        found = dict(reversed(attrs))  # the first occurrence wins
        if "disable-tracking" in found or found.get("clicktracking") == "off" or "data-no-track" in found:
            return
        href = re.sub(r"[\t\n\r]", "", (found.get("href") or "").strip(" \t\n\r\f"))
        # "http://" with no host leads nowhere, so it is not tracked either
        if re.match(r"https?://[^/?#]", href, re.I) and "unsubscribe_url%" not in href.lower():
            self.urls.append(href)


def reference_links(text: str) -> list[str]:
    parser = Links()
    parser.feed(text)
    parser.close()
    return parser.urls


@pytest.mark.parametrize("name", HTML_FILES)
def test_corpus_html_changes_only_href_values(name):
    # GIVEN a real-world HTML template (bytes kept via surrogateescape)
    text = (CORPUS / "html" / name).read_bytes().decode("utf-8", "surrogateescape")
    recorder = Recorder()
    # WHEN its links are rewritten
    result, count = rewrite_html(text, recorder, tracking_host=HOST)
    # THEN every byte but the replaced href values is kept
    assert count == len(recorder.urls)
    align(text, result, recorder.urls, html_attribute=True)
    # AND every link a browser sees in the markup was rewritten (Outlook's conditional blocks add more)
    expected = reference_links(text)
    remaining = list(recorder.urls)
    for url in expected:
        assert url in remaining or html.unescape(url) in remaining, url
        remaining.remove(url if url in remaining else html.unescape(url))


def test_the_corpus_has_links_to_rewrite():
    total = sum(
        rewrite_html((CORPUS / "html" / n).read_bytes().decode("utf-8", "surrogateescape"), Recorder())[1]
        for n in HTML_FILES
    )
    assert total > 50


def _leaves(
    msg: email.message.Message, path: tuple[int, ...] = ()
) -> list[tuple[tuple[int, ...], email.message.Message]]:
    if msg.is_multipart() and msg.get_content_maintype() == "multipart":
        return [leaf for i, child in enumerate(msg.get_payload()) for leaf in _leaves(child, (*path, i))]
    return [(path, msg)]


@pytest.mark.parametrize("name", MIME_FILES)
def test_corpus_message_changes_only_link_urls(name):
    # GIVEN a real-world message
    raw = (CORPUS / "mime" / name).read_bytes()
    recorder = Recorder()
    # WHEN its HTML and text links are rewritten
    result = rewrite(raw, recorder, text=True, tracking_host=HOST)
    # THEN signed and DKIM-signed messages come back untouched, with the reason
    if name in UNTOUCHED:
        assert (result.message, result.links, result.reason) == (raw, 0, UNTOUCHED[name])
        return
    check_rewritten(raw, result, recorder)


@pytest.mark.parametrize("name", sorted(n for n, reason in UNTOUCHED.items() if reason == DKIM_SIGNED))
def test_corpus_message_without_its_dkim_signature(name):
    # GIVEN a DKIM-signed corpus message with its DKIM-Signature cut out, so the walker runs on it
    raw = strip_dkim((CORPUS / "mime" / name).read_bytes())
    recorder = Recorder()
    # WHEN rewritten, THEN only link URLs change
    check_rewritten(raw, rewrite(raw, recorder, text=True, tracking_host=HOST), recorder)


@pytest.mark.parametrize("cte", ["8bit", "quoted-printable", "base64"])
@pytest.mark.parametrize("name", HTML_FILES)
def test_corpus_html_in_a_mime_message(name, cte):
    # GIVEN a template as a single-part text/html message in each transfer encoding
    raw = wrap_html((CORPUS / "html" / name).read_bytes(), cte)
    recorder = Recorder()
    # WHEN rewritten
    result = rewrite(raw, recorder, tracking_host=HOST)
    # THEN only the href values change, in the same encoding, and as many links as the template has
    check_rewritten(raw, result, recorder)
    assert (
        result.links
        == rewrite_html(
            (CORPUS / "html" / name).read_bytes().decode("utf-8", "surrogateescape"),
            Recorder(),
            tracking_host=HOST,
        )[1]
    )


def check_rewritten(raw: bytes, result, recorder: Recorder) -> None:
    assert result.reason is None
    assert result.links == len(recorder.urls)
    if not result.links:
        assert result.message == raw
        return
    # AND the same tree of parts, with the same headers, comes back
    before, after = parse(raw), parse(result.message)
    old_leaves, new_leaves = _leaves(before), _leaves(after)
    assert [p for p, _ in old_leaves] == [p for p, _ in new_leaves]
    assert [m.items() for m in before.walk()] == [m.items() for m in after.walk()]
    # AND bytes outside the bodies of the leaves are identical (boundaries, headers, preamble, epilogue)
    spans_before = [body_span(raw, p) for p, _ in old_leaves]
    spans_after = [body_span(result.message, p) for p, _ in new_leaves]
    outside_before, outside_after, last_b, last_a = [], [], 0, 0
    for (sb, eb), (sa, ea) in zip(spans_before, spans_after, strict=True):
        outside_before.append(raw[last_b:sb])
        outside_after.append(result.message[last_a:sa])
        last_b, last_a = eb, ea
    assert [*outside_before, raw[last_b:]] == [*outside_after, result.message[last_a:]]
    # AND each leaf decodes to the original with only its link URLs replaced, line endings kept
    markers_seen = 0
    for ((path, old), (_, new)), (sb, eb), (sa, ea) in zip(
        zip(old_leaves, new_leaves, strict=True), spans_before, spans_after, strict=True
    ):
        old_data, new_data = decoded_payload(old), decoded_payload(new)
        if old_data == new_data:
            assert raw[sb:eb] == result.message[sa:ea], f"{path}: re-encoded without a change"
            continue
        assert old.get_content_type() in ("text/html", "text/plain"), path
        charset = old.get_content_charset()
        old_text, new_text = as_text(old_data, charset), as_text(new_data, charset)
        found = [int(n) for n in MARKER.findall(new_text)]
        urls = recorder.urls[found[0] : found[-1] + 1]
        # renumber: this part's markers start at 0 for align()
        first = found[0]
        renumbered = MARKER.sub(
            lambda m, first=first: f"https://{HOST}/c/L{int(m.group(1)) - first}", new_text
        )
        align(old_text, renumbered, urls, html_attribute=old.get_content_type() == "text/html")
        markers_seen += len(found)
        old_body, new_body = raw[sb:eb], result.message[sa:ea]
        crlf_old, lf_old = line_endings(old_body)
        crlf_new, lf_new = line_endings(new_body)
        assert (crlf_old == 0) == (crlf_new == 0) and (lf_old == 0) == (lf_new == 0), f"{path}: line endings"
    assert markers_seen == result.links
