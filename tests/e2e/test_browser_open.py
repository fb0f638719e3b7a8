"""A real browser opens a stored copy, as a recipient's mail client would: Debian's headless Chromium,
with the tracking host mapped to the local stack, loads the pixel and the open is recorded."""

from __future__ import annotations

import email
import shutil
import subprocess
import time
from email import policy

import pytest
import requests

DOMAIN = "browser.example.com"
READER = "browser-reader@example.net"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def chromium_flags(user_data_dir, port: int) -> list[str]:
    return [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={user_data_dir}",
        # The recipient's DNS would send email.<domain> to us; here the tracking host maps to the local stack.
        f"--host-resolver-rules=MAP email.{DOMAIN} 127.0.0.1:{port}",
        "--virtual-time-budget=5000",
        "--dump-dom",
    ]


@pytest.fixture(scope="module")
def tracked_copy(local_stack):
    local_stack.create_tracked_domain(DOMAIN)
    response = requests.post(
        f"{local_stack.api_url}/v3/{DOMAIN}/messages",
        auth=("api", local_stack.api_key),
        data=[
            ("from", f"news@{DOMAIN}"),
            ("to", READER),
            ("subject", "Browser test"),
            ("o:tag", "Browser"),
            ("html", "<html><body><h1>Hello</h1><p>Images on.</p></body></html>"),
            ("text", "Hello"),
        ],
        timeout=30,
    )
    assert response.status_code == 200, response.text
    ((record, data),) = local_stack.copies_of(READER)
    return record, email.message_from_bytes(data, policy=policy.default)


@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian chromium is missing: `make system-deps`")
def test_chromium_loading_the_copy_records_the_open_for_that_recipient_and_tag(
    local_stack, tracked_copy, tmp_path
):
    record, message = tracked_copy
    assert local_stack.copy_items(record["pk"].removeprefix("COPY#"), "OPEN#") == []
    page = tmp_path / "copy.html"
    page.write_text(message.get_body(("html",)).get_content())

    # WHEN the browser renders the stored HTML copy
    result = subprocess.run(  # noqa: S603 - Debian's chromium with fixed flags
        [*chromium_flags(tmp_path / "profile", local_stack.port), page.as_uri()],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert "<h1>Hello</h1>" in result.stdout, result.stderr[-2000:]

    # THEN one open is recorded for that copy (polled briefly: the write happens as the image loads)
    copy_id = record["pk"].removeprefix("COPY#")
    deadline = time.monotonic() + 15
    opens = []
    while time.monotonic() < deadline and not opens:
        opens = local_stack.copy_items(copy_id, "OPEN#")
        time.sleep(0.2)
    assert len(opens) == 1
    raw_open = opens[0]
    assert raw_open["method"]["S"] == "GET"
    assert raw_open["ip"]["S"] == "127.0.0.1"
    assert "Chrome" in raw_open["user_agent"]["S"]
    # AND the copy it names is that recipient's, with the message's tag
    assert record["recipient"] == READER
    assert record["tags"] == ["browser"]
