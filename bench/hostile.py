"""Hostile input: does any input shape make a parser super-linear? For each shape of issue 15 (and the
classes SECURITY.md lists), the time at size N and at 2N, through the code that parses it on the request
path. The ratio t(2N) / t(N) is about 2 for linear work and about 4 for quadratic; the target is at most 2.5
(timing noise on a loaded 2-core machine). Each time is the best of a few runs.

Shapes:
- a Content-Type with a quoted parameter of N semicolons, and with N/5 unquoted parameters (the injector's
  MIME parameter parsing; the email package's own parser is quadratic in both);
- an HTML body with N/50 unclosed Outlook conditional comments (the link rewriter's markup scan);
- a base64 HTML part of N bytes with a list footer after the padding (the injector's base64 reading);
- JSON nested N/2 deep in a form field (recipient-variables; refused with a 400);
- a To field of N/40 addresses (the recipient parser, RFC 5321 limits included).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

from bench.report import row

CASE = "hostile input"
TARGET = 2.5

HTML = b"<html><body><p>Hello</p></body></html>\r\n"


def _mime(content_type: str, body: bytes, cte: str = "7bit") -> bytes:
    return (
        "From: s@example.com\r\nTo: a@example.net\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: {content_type}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n"
    ).encode() + body


def _shapes() -> dict[str, Callable[[int], Callable[[], object]]]:
    """name -> make(n) -> the work for input size n (bytes, roughly)."""
    from opentracking.core.errors import BadRequest
    from opentracking.mail import compose, injection, links
    from opentracking.messages import options

    pixel = "https://email.example.com/o/token"

    def quoted_parameter(n: int) -> Callable[[], object]:
        message = _mime('text/html; a="' + ";" * n, HTML)
        return lambda: injection.inject(message, pixel)

    def many_parameters(n: int) -> Callable[[], object]:
        message = _mime("text/html; " + "a=b; " * (n // 5), HTML)
        return lambda: injection.inject(message, pixel)

    def unclosed_conditionals(n: int) -> Callable[[], object]:
        html = "<html><body>" + '<!--[if mso]><a href="https://e.org/x">x</a>' * (n // 50) + "</body></html>"
        return lambda: links.rewrite_html(html, lambda url: "https://email.example.com/c/token")

    def base64_footer(n: int) -> Callable[[], object]:
        html = b"<html><body>" + b"<p>Hello</p>" * (n // 12) + b"</body></html>"
        footer = b"_______________________________________________\r\nexample-list mailing list\r\n"
        body = base64.encodebytes(html).replace(b"\n", b"\r\n") + footer
        message = _mime("text/html; charset=utf-8", body, cte="base64")
        return lambda: injection.inject(message, pixel)

    def deep_json(n: int) -> Callable[[], object]:
        value = "[" * (n // 2) + "]" * (n // 2)

        def parse() -> object:
            try:
                return options.parse_json_object("recipient-variables", value)
            except BadRequest as refused:
                return refused

        return parse

    def many_addresses(n: int) -> Callable[[], object]:
        field = ", ".join(f"reader{i}@example.net" for i in range(n // 40))
        return lambda: compose.parse_recipients([field], "to")

    return {
        "content-type, one quoted parameter of N ';'": quoted_parameter,
        "content-type, N/5 parameters": many_parameters,
        "html, N/50 unclosed <!--[if mso]>": unclosed_conditionals,
        "base64 html of N bytes, a footer after the padding": base64_footer,
        "recipient-variables nested N/2 deep": deep_json,
        "to, N/40 addresses": many_addresses,
    }


def _best_of(work: Callable[[], object], runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def run(*, tiny: bool) -> dict:
    size = 20_000 if tiny else 200_000
    runs = 2 if tiny else 5
    rows, raw = [], {}
    for name, make in _shapes().items():
        single, double = make(size), make(2 * size)
        single()  # warm: imports, regex compilation, caches
        t1, t2 = _best_of(single, runs), _best_of(double, runs)
        raw[name] = {"n": size, "seconds_n": t1, "seconds_2n": t2}
        rows.append(
            row(
                CASE,
                f"{name}: time at 2N / time at N",
                t2 * 1000,
                "ms",
                baseline=t1 * 1000,
                target=f"<= {TARGET}",
                met=(t2 / t1) <= TARGET if t1 > 0 else None,
                note=f"N = {size:,}",
            )
        )
    return {"rows": rows, "raw": raw}
