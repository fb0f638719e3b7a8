"""Link rewriting rules: which links are tracked, and how each MIME part keeps its bytes."""

from __future__ import annotations

import base64
import binascii
import email
import email.policy

import pytest

from opentracking.mail.injection import DKIM_SIGNED, ENCRYPTED, SIGNED
from opentracking.mail.links import list_unsubscribe_targets, rewrite, rewrite_html, rewrite_text

HOST = "email.example.com"


class Recorder:
    def __init__(self) -> None:
        self.urls: list[str] = []

    def __call__(self, url: str) -> str:
        self.urls.append(url)
        return f"https://{HOST}/c/T{len(self.urls)}"


def html_links(html: str) -> tuple[str, list[str]]:
    recorder = Recorder()
    result, count = rewrite_html(html, recorder, tracking_host=HOST)
    assert count == len(recorder.urls)
    return result, recorder.urls


def mime(body: bytes, ctype: str = "text/html; charset=utf-8", cte: str = "7bit", headers: str = "") -> bytes:
    return (
        f"From: a@example.com\r\nTo: b@example.net\r\nSubject: s\r\n{headers}MIME-Version: 1.0\r\n"
        f"Content-Type: {ctype}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n"
    ).encode() + body


def alternative(text: bytes, html: bytes, headers: str = "") -> bytes:
    return (
        (
            f"From: a@example.com\r\nTo: b@example.net\r\n{headers}MIME-Version: 1.0\r\n"
            'Content-Type: multipart/alternative; boundary="B"\r\n\r\n'
            "--B\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        ).encode()
        + text
        + b"\r\n--B\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        + html
        + b"\r\n--B--\r\n"
    )


# --- which links --------------------------------------------------------------------------------------


def test_http_and_https_links_are_rewritten_in_place():
    result, urls = html_links(
        '<p><a class="x" href="https://a.example/p?q=1">A</a> <A HREF=http://b.example/>B</A></p>'
    )
    assert result == (
        f'<p><a class="x" href="https://{HOST}/c/T1">A</a> <A HREF=https://{HOST}/c/T2>B</A></p>'
    )
    assert urls == ["https://a.example/p?q=1", "http://b.example/"]


@pytest.mark.parametrize(
    "link",
    [
        '<a href="mailto:someone@example.net">mail</a>',
        '<a href="tel:+15555550100">call</a>',
        '<a href="#section-2">jump</a>',
        '<a href="/relative/path">relative</a>',
        '<a href="javascript:void(0)">js</a>',
        '<a href="ftp://files.example/x">ftp</a>',
        '<a href="http://">no host</a>',
        '<a name="anchor">no href</a>',
        '<a href="%unsubscribe_url%">unsubscribe</a>',
        '<a href="https://x.example/?u=%tag_unsubscribe_url%">unsubscribe</a>',
        '<a href="%mailing_list_unsubscribe_url%">unsubscribe</a>',
        f'<a href="https://{HOST}/c/already">already tracked</a>',
        '<a href="https://a.example/" disable-tracking="true">marked</a>',
        '<a disable-tracking href="https://a.example/">marked, no value</a>',
        '<a href="https://a.example/" clicktracking="off">marked, SendGrid style</a>',
        '<a data-no-track href="https://a.example/">marked</a>',
        '<!-- <a href="https://a.example/">commented out</a> -->',
        "<script>var s = '<a href=\"https://a.example/\">';</script>",
        "<style>a[href='https://a.example/'] { color: red }</style>",
        '<img src="https://a.example/logo.png">',
        '<link href="https://a.example/style.css" rel="stylesheet">',
    ],
)
def test_links_that_stay_as_they_are(link):
    html = f"<html><body>{link}</body></html>"
    assert html_links(html) == (html, [])


def test_a_marker_set_to_false_does_not_stop_tracking():
    _result, urls = html_links('<a href="https://a.example/" disable-tracking="false">x</a>')
    assert urls == ["https://a.example/"]


def test_the_url_sealed_is_the_one_a_browser_follows():
    # character references decoded (but "&copy=" in a query is text, as browsers read attributes),
    # surrounding whitespace trimmed, tabs and newlines inside removed
    html = (
        '<a href="https://a.example/?a=1&amp;b=2&copy=3">1</a>'
        '<a href="  https://b.example/x\n  y  ">2</a>'
        '<a href="https://c.example/&#x41;&#66;">3</a>'
    )
    _result, urls = html_links(html)
    assert urls == ["https://a.example/?a=1&b=2&copy=3", "https://b.example/x  y", "https://c.example/AB"]


def test_first_href_wins_and_other_attributes_are_untouched():
    result, urls = html_links(
        "<a title='https://t.example/' href='https://a.example/' href='https://b.example/'>x</a>"
    )
    assert urls == ["https://a.example/"]
    assert (
        result == f"<a title='https://t.example/' href='https://{HOST}/c/T1' href='https://b.example/'>x</a>"
    )


def test_outlook_conditional_blocks_are_markup_for_outlook():
    html = (
        '<!--[if mso]><v:roundrect href="https://a.example/vml" arcsize="10%"><w:anchorlock/>'
        "<center>Go</center></v:roundrect><![endif]-->"
        '<!--[if !mso]><!--><a href="https://a.example/button">Go</a><!--<![endif]-->'
    )
    _result, urls = html_links(html)
    assert urls == ["https://a.example/vml", "https://a.example/button"]


def test_plain_text_urls_end_where_a_reader_sees_them_end():
    recorder = Recorder()
    text = (
        "Read https://a.example/post. Or (https://b.example/x) and <https://c.example/y>,\n"
        "https://en.wikipedia.org/wiki/Foo_(bar)! mailto:x@example.net"
    )
    result, count = rewrite_text(text, recorder)
    assert recorder.urls == [
        "https://a.example/post",
        "https://b.example/x",
        "https://c.example/y",
        "https://en.wikipedia.org/wiki/Foo_(bar)",
    ]
    assert count == 4
    assert result == (
        f"Read https://{HOST}/c/T1. Or (https://{HOST}/c/T2) and <https://{HOST}/c/T3>,\n"
        f"https://{HOST}/c/T4! mailto:x@example.net"
    )


def test_list_unsubscribe_targets_are_the_unsubscribe_link():
    message = alternative(
        b"Stop: https://u.example/unsub?id=9\r\nShop: https://shop.example/",
        b'<a href="https://u.example/unsub?id=9">Unsubscribe</a><a href="https://shop.example/">Shop</a>',
        headers="List-Unsubscribe: <mailto:u@example.com>,\r\n <https://u.example/unsub?id=9>\r\n",
    )
    assert list_unsubscribe_targets(message) == {"mailto:u@example.com", "https://u.example/unsub?id=9"}
    recorder = Recorder()
    result = rewrite(message, recorder, text=True, tracking_host=HOST)
    assert recorder.urls == ["https://shop.example/", "https://shop.example/"]
    assert result.links == 2 and b"https://u.example/unsub?id=9" in result.message


# --- which parts --------------------------------------------------------------------------------------


def test_text_parts_only_when_asked():
    message = alternative(b"Go to https://a.example/", b'<a href="https://a.example/">Go</a>')
    htmlonly = rewrite(message, Recorder(), text=False, tracking_host=HOST)
    both = rewrite(message, Recorder(), text=True, tracking_host=HOST)
    assert htmlonly.links == 1 and b"Go to https://a.example/" in htmlonly.message
    assert both.links == 2 and b"Go to https://a.example/" not in both.message


def test_attachments_and_attached_messages_are_never_touched():
    inner = b"Content-Type: text/html\r\n\r\n<a href='https://inner.example/'>x</a>"
    message = (
        b"From: a@example.com\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=M\r\n\r\n"
        b"--M\r\nContent-Type: text/html\r\n\r\n<a href='https://body.example/'>x</a>\r\n"
        b"--M\r\nContent-Type: text/html\r\nContent-Disposition: attachment; filename=a.html\r\n\r\n"
        b"<a href='https://attached.example/'>x</a>\r\n"
        b"--M\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=a.txt\r\n\r\n"
        b"https://attached-text.example/\r\n"
        b"--M\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--M--\r\n"
    )
    recorder = Recorder()
    result = rewrite(message, recorder, text=True, tracking_host=HOST)
    assert recorder.urls == ["https://body.example/"]
    assert result.message == message.replace(b"https://body.example/", f"https://{HOST}/c/T1".encode())


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (
            mime(b"<a href='https://a.example/'>x</a>", headers="DKIM-Signature: v=1; d=example.com\r\n"),
            DKIM_SIGNED,
        ),
        (
            b"MIME-Version: 1.0\r\nContent-Type: multipart/signed; boundary=S;\r\n"
            b' protocol="application/pgp-signature"\r\n\r\n'
            b"--S\r\nContent-Type: text/html\r\n\r\n<a href='https://a.example/'>x</a>\r\n"
            b"--S\r\nContent-Type: application/pgp-signature\r\n\r\nsig\r\n--S--\r\n",
            SIGNED,
        ),
        (
            b"MIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n"
            b"\r\nMIIB",
            ENCRYPTED,
        ),
    ],
)
def test_signed_and_encrypted_content_is_never_touched(message, reason):
    result = rewrite(message, Recorder(), text=True, tracking_host=HOST)
    assert (result.message, result.links, result.reason) == (message, 0, reason)


# --- byte preservation per encoding --------------------------------------------------------------------


def decoded_html(message: bytes) -> str:
    return email.message_from_bytes(message, policy=email.policy.default).get_body(("html",)).get_content()


def test_quoted_printable_keeps_its_encoding_and_unchanged_lines():
    html = (
        "<p>"
        + "word " * 30
        + "</p>\n"
        + '<a href="https://a.example/very/long/path?with=query&amp;x=1">go</a>\n<p>end=</p>\n'
    )
    body = binascii.b2a_qp(html.encode(), istext=True).replace(b"\n", b"\r\n")
    message = mime(body, cte="quoted-printable")
    result = rewrite(message, Recorder(), tracking_host=HOST)
    assert result.links == 1
    new_body = result.message[result.message.index(b"\r\n\r\n") + 4 :]
    assert new_body.startswith(body[: body.index(b"<a")])  # the lines before the link: byte for byte
    assert new_body.endswith(b"<p>end=3D</p>\r\n")
    assert all(len(line) <= 76 for line in new_body.split(b"\r\n"))
    expected = html.replace("https://a.example/very/long/path?with=query&amp;x=1", f"https://{HOST}/c/T1")
    assert decoded_html(result.message).replace("\r\n", "\n") == expected


def test_base64_keeps_its_line_length_and_line_ending():
    html = '<html><body><a href="https://a.example/">x</a>' + "<p>filler</p>" * 20 + "</body></html>"
    encoded = base64.encodebytes(html.encode())  # 76-character lines, LF
    message = mime(encoded.replace(b"\n", b"\r\n"), cte="base64")
    result = rewrite(message, Recorder(), tracking_host=HOST)
    new_body = result.message[result.message.index(b"\r\n\r\n") + 4 :]
    lines = new_body.split(b"\r\n")
    assert all(len(line) == 76 for line in lines[:-2]) and lines[-1] == b""
    assert b"\n" not in new_body.replace(b"\r\n", b"")
    assert decoded_html(result.message) == html.replace("https://a.example/", f"https://{HOST}/c/T1")


def test_utf16_html_is_rewritten_in_its_own_encoding():
    html = '<html><body>\u00e9t\u00e9 <a href="https://a.example/\u00e9">x</a></body></html>'
    body = base64.encodebytes(html.encode("utf-16")).replace(b"\n", b"\r\n")
    recorder = Recorder()
    result = rewrite(mime(body, "text/html; charset=utf-16", "base64"), recorder, tracking_host=HOST)
    assert recorder.urls == ["https://a.example/\u00e9"]
    assert decoded_html(result.message) == html.replace("https://a.example/\u00e9", f"https://{HOST}/c/T1")


def test_latin1_url_bytes_are_read_in_the_part_charset():
    recorder = Recorder()
    rewrite(
        mime(
            '<a href="https://a.example/caf\u00e9">x</a>'.encode("latin-1"),
            "text/html; charset=iso-8859-1",
            "8bit",
        ),
        recorder,
    )
    assert recorder.urls == ["https://a.example/caf\u00e9"]


def test_iso2022jp_double_byte_runs_are_not_links():
    # GIVEN ISO-2022-JP HTML: a Japanese run (ESC $ B ... ESC ( B) whose bytes happen to spell an href
    japanese = "\u65e5\u672c\u8a9e".encode("iso-2022-jp")
    body = b'<a href="https://a.example/">x</a>' + japanese + b'\x1b$B<a href="https://b\x1b(B'
    recorder = Recorder()
    result = rewrite(mime(body, "text/html; charset=iso-2022-jp"), recorder, tracking_host=HOST)
    # THEN only the ASCII link is rewritten
    assert recorder.urls == ["https://a.example/"] and result.links == 1


def test_a_7bit_line_never_passes_998_octets():
    # GIVEN a 7bit line of 990 octets with a short link in it
    line = '<a href="https://a.example/">x</a>' + "y" * 956
    assert len(line) == 990
    recorder = Recorder()
    result = rewrite(mime(line.encode() + b"\r\n"), recorder, tracking_host=HOST)
    # THEN that link stays as it was (the tracking URL would make the line too long for 7bit)
    assert result.links == 0 and result.message == mime(line.encode() + b"\r\n")


def test_unchanged_messages_come_back_as_they_were():
    message = alternative(b"no links here", b"<p>none here either</p>")
    assert rewrite(message, Recorder(), text=True, tracking_host=HOST).message == message


def test_quoted_printable_href_spanning_lines_is_rewritten_and_still_decodes():
    # GIVEN an href value broken over two lines (browsers drop the line break from the URL)
    html = '<p>before</p>\n<a href="https://a.example/long\npath">x</a>\n<p>after</p>\n'
    body = binascii.b2a_qp(html.encode(), istext=True).replace(b"\n", b"\r\n")
    recorder = Recorder()
    result = rewrite(mime(body, cte="quoted-printable"), recorder, tracking_host=HOST)
    # THEN the URL a browser follows is sealed, and the part decodes to the original with that value replaced
    assert recorder.urls == ["https://a.example/longpath"]
    new_body = result.message[result.message.index(b"\r\n\r\n") + 4 :]
    assert new_body.startswith(b"<p>before</p>\r\n") and new_body.endswith(b"<p>after</p>\r\n")
    expected = html.replace("https://a.example/long\npath", f"https://{HOST}/c/T1")
    assert decoded_html(result.message).replace("\r\n", "\n") == expected
