"""Fixtures shared by the integration tests (the session's local stack is in tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.helpers.webhook_receiver import Receiver


@pytest.fixture(scope="module")
def hooks():
    """A webhook receiver on loopback for one test module: what the stack POSTs to it, kept."""
    receiver = Receiver()
    yield receiver
    receiver.close()
