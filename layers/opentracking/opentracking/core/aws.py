"""Lazily created boto3 clients.

Clients are created on first use, never at import, so tests can start moto first and cold starts only pay
for the clients a function actually uses. The pixel gets a client with tight timeouts and few retries: a
reader must never wait on DynamoDB.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from botocore.config import Config

# Submission and management: standard retries, generous but bounded timeouts.
DEFAULT_CONFIG = Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 4, "mode": "standard"})
# The pixel's budget: one attempt, bounded in time, then the spill queue (the spill is the retry: the redrive
# writes the open later, so none is lost). botocore reads `max_attempts` as retries after the first, and
# standard mode sleeps between them: with retries a failing DynamoDB kept readers waiting seconds (issue 27).
# `total_max_attempts` counts every attempt, the first included. DynamoDB answers a PutItem in well under
# 100 ms; one that takes 200 ms is treated as down and its open spilled, so a hanging table keeps a reader
# about 0.2 s (the target is 250 ms of handler time).
# No client-side parameter validation: its one PutItem is built by our code in DynamoDB's wire format and
# the service validates it anyway; validation was ~11% of the pixel's put_item CPU (PERFORMANCE.md, gap 7).
PIXEL_CONFIG = Config(
    connect_timeout=0.1,
    read_timeout=0.2,
    retries={"total_max_attempts": 1, "mode": "standard"},
    tcp_keepalive=True,
    parameter_validation=False,
)


# A submission's bulk writes (its records, 100 to a transaction, and its send jobs, 10 to a batch): items
# built by our code, which the service validates anyway. botocore's client-side validation of them was a
# third of the submission's storage CPU (measured with the submission bench's profile, 2026-12-07).
BULK_CONFIG = DEFAULT_CONFIG.merge(Config(parameter_validation=False))
_CONFIGS = {"pixel": PIXEL_CONFIG, "bulk": BULK_CONFIG}


@cache
def _session() -> boto3.session.Session:
    # One session for every client: each new session loads botocore's data files again.
    return boto3.session.Session()


@cache
def client(service: str, profile: str = "default") -> Any:
    config = _CONFIGS.get(profile, DEFAULT_CONFIG)
    # The stubs type each service's client for a literal name; callers name theirs, botocore checks it.
    return _session().client(service, config=config)  # type: ignore[call-overload]


def reset_clients() -> None:
    """Forget cached clients and the session (tests start a fresh moto for each case)."""
    client.cache_clear()
    _session.cache_clear()
