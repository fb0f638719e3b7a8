"""`make run` stops on Ctrl-C or SIGTERM while it is busy (its stream consumer in the middle of a batch of
opens): the process ends, and no port it listened on answers any more."""

from __future__ import annotations

import signal
import socket
import threading
from urllib.parse import urlsplit

import pytest
import requests

from devstack.process import start_stack

DOMAIN = "stop.example.com"


def answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_busy_stack_stops_and_leaves_no_listener(tmp_path, signum):
    # GIVEN a running stack whose consumer is busy with the opens of a 100-recipient message
    stack = start_stack(tmp_path)
    try:
        stack.create_tracked_domain(DOMAIN)
        response = stack.call(
            "POST",
            f"/v3/{DOMAIN}/messages",
            data=[("from", f"s@{DOMAIN}"), ("html", "<p>hi</p>"), ("o:tracking-opens", "yes")]
            + [("to", f"reader{n}@example.net") for n in range(100)],
        )
        assert response.status_code == 200, response.text
        pixels = [f"/o/{token}" for token in stack.issued_tokens()]  # no links: pixel tokens only
        assert len(pixels) == 100
        opened = threading.Event()

        def open_all() -> None:
            with requests.Session() as session:
                for path in pixels * 3:
                    try:
                        session.get(stack.api_url + path, timeout=5)
                    except requests.RequestException:
                        return  # the stack stopped under us, as it should
                    opened.set()

        reader = threading.Thread(target=open_all, daemon=True)
        reader.start()
        assert opened.wait(30)

        # WHEN it is signalled
        stack.process.send_signal(signum)
        code = stack.process.wait(timeout=15)
    finally:
        stack.stop()

    # THEN it ended cleanly, said so, and nothing it listened on answers
    assert code == 0
    assert any("stopped in" in line for line in stack.output), stack.output[-10:]
    assert not answers(stack.api_url)
    assert not answers(stack.aws_endpoint)
    reader.join(15)
