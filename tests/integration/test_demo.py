"""`make demo` against a running local stack: a tracked open, end to end, and it can be run again."""

from __future__ import annotations

import subprocess
import sys

from devstack.process import python_environment
from devstack.template import ROOT


def run_demo(local_stack) -> subprocess.CompletedProcess:
    env = python_environment(OPENTRACKING_STATE_FILE=str(local_stack.state_file))
    return subprocess.run(
        [sys.executable, "-m", "devstack.demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_demo_shows_a_tracked_open_and_can_run_twice(local_stack):
    for _ in range(2):
        result = run_demo(local_stack)
        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout
        assert "valid: invalid" in out  # the CNAME starts missing
        assert "HTTP 400: Open tracking cannot be enabled" in out
        assert "valid: valid" in out
        assert "'opens': True" in out
        assert "HTTP 200: image/gif, 43 bytes" in out
        assert "recipient: reader@example.net" in out
        assert "tags: newsletter" in out
        assert "demo finished" in out


def test_demo_shows_the_message_as_the_recipients_server_received_it(tmp_path):
    """As `make run` runs by default (DELIVERY_TRANSPORT=smtp to its own SMTP server): the demo reads the
    message from the server's folder, opens that message's pixel and lists accepted, delivered, opened."""
    from devstack.process import start_stack

    stack = start_stack(tmp_path, extra_env={"DELIVERY_TRANSPORT": "smtp"})
    try:
        result = run_demo(stack)
        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout
        assert "What the recipient's mail server received (the local SMTP server)" in out
        assert f"file: {tmp_path}" in out and ".eml" in out
        assert "(the same bytes)" in out  # what the server received is the stored copy
        assert "Subject: Your November newsletter" in out
        assert "HTTP 200: image/gif, 43 bytes" in out
        assert "delivered: " in out and "(250 2.0.0 Ok: queued as local-" in out
        assert "opened: " in out
    finally:
        assert stack.stop() == 0, "\n".join(stack.output[-40:])
