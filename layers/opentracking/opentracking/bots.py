"""Telling machine opens from human ones, from what the raw open carries (method, user agent, timing).

Mailgun's `bot` field: "apple" (Apple Mail Privacy Protection prefetches every image through its proxy
with a bare `Mozilla/5.0` user agent), "gmail" (Gmail's prefetch), "generic" (security scanners: HEAD
requests, known scanner agents, loads within seconds of acceptance) or "" for a human. A load through
GoogleImageProxy is a human opening the message in Gmail: the proxy only hides the reader's address.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Scanners and link checkers that fetch images without a person looking.
_SCANNER_AGENTS = re.compile(
    r"barracuda|mimecast|proofpoint|symantec|forcepoint|trendmicro|zscaler|bitdefender|"
    r"python-requests|curl/|wget/|go-http-client|okhttp|java/|headlesschrome|phantomjs|bot\b|spider|crawler",
    re.IGNORECASE,
)
_GMAIL_PREFETCH = re.compile(
    r"Google-Read-Aloud|GoogleImageProxy.*prefetch|Feedfetcher-Google", re.IGNORECASE
)
SCANNER_WINDOW_SECONDS = 10.0


@dataclass(frozen=True)
class BotVerdict:
    bot: str  # "apple", "gmail", "generic" or ""
    reason: str


def classify(*, method: str, user_agent: str, seconds_after_accept: float | None) -> BotVerdict:
    agent = (user_agent or "").strip()
    if method.upper() == "HEAD":
        return BotVerdict("generic", "HEAD request: scanners check links without loading images")
    if agent == "Mozilla/5.0":
        return BotVerdict("apple", "bare Mozilla/5.0 user agent: Apple Mail Privacy Protection prefetch")
    if _GMAIL_PREFETCH.search(agent):
        return BotVerdict("gmail", "Gmail prefetch user agent")
    if "GoogleImageProxy" in agent:
        return BotVerdict("", "GoogleImageProxy: a person opened it in Gmail (the proxy hides their address)")
    if _SCANNER_AGENTS.search(agent):
        return BotVerdict("generic", "known scanner or HTTP library user agent")
    if seconds_after_accept is not None and seconds_after_accept < SCANNER_WINDOW_SECONDS:
        return BotVerdict(
            "generic", f"loaded {seconds_after_accept:.1f}s after acceptance: too fast for a person"
        )
    return BotVerdict("", "looks like a person's mail client")
