"""Telling machine opens from human ones, from what the raw open carries (method, user agent, address,
timing).

Mailgun's `bot` field: "apple" (Apple Mail Privacy Protection prefetches every image through Apple's proxy:
the load comes from an Apple egress address, often with a bare `Mozilla/5.0` user agent), "gmail" (Gmail's
prefetch), "generic" (security scanners: HEAD requests, known scanner agents, loads within seconds of
acceptance) or "" for a human. A load through GoogleImageProxy is a human opening the message in Gmail:
the proxy only hides the reader's address.

Apple's egress ranges are dated data with their sources, in data/apple_mpp_ranges.csv (see its header);
they are parsed once per process into sorted integer intervals and looked up with a binary search.
"""

from __future__ import annotations

import bisect
import csv
import ipaddress
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

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
BARE_AGENT = "Mozilla/5.0"
APPLE_RANGES_FILE = "data/apple_mpp_ranges.csv"
# What each `source` id of the ranges file stands for, in the reason stored with the verdict.
_RANGE_SOURCES = {
    "apple-assigned": "Apple Inc.'s own address space",
    "apple-announced": "announced by Apple's networks (AS714, AS6185)",
    "private-relay": "Apple's iCloud Private Relay egress list, which Mail Privacy Protection loads through",
}


@dataclass(frozen=True)
class AddressRanges:
    """Disjoint, sorted [first, last] integer intervals of one IP version, with the network and source
    each came from."""

    firsts: list[int]
    lasts: list[int]
    labels: list[tuple[str, str]]  # (network, source id)

    def find(self, address: int) -> tuple[str, str] | None:
        i = bisect.bisect_right(self.firsts, address) - 1
        if i >= 0 and address <= self.lasts[i]:
            return self.labels[i]
        return None


def parse_ranges(text: str) -> dict[int, AddressRanges]:
    """The ranges file (comment lines start with #) as one AddressRanges per IP version. Overlapping or
    nested networks are merged into the first (widest) one, so every address has one interval to find."""
    rows = csv.DictReader(line for line in text.splitlines() if line.strip() and not line.startswith("#"))
    spans: dict[int, list[tuple[int, int, str, str]]] = {4: [], 6: []}
    for row in rows:
        network = ipaddress.ip_network(row["network"].strip())
        first, last = int(network.network_address), int(network.broadcast_address)
        spans[network.version].append((first, last, str(network), row["source"].strip()))
    result = {}
    for version, items in spans.items():
        firsts: list[int] = []
        lasts: list[int] = []
        labels: list[tuple[str, str]] = []
        for first, last, cidr, source in sorted(items, key=lambda item: (item[0], -item[1])):
            if lasts and first <= lasts[-1] + 1:
                lasts[-1] = max(lasts[-1], last)  # touching or overlapping: one interval
                continue
            firsts.append(first)
            lasts.append(last)
            labels.append((cidr, source))
        result[version] = AddressRanges(firsts, lasts, labels)
    return result


@cache
def apple_ranges() -> dict[int, AddressRanges]:
    """Loaded on first use, once per process (the pixel never calls this: it classifies nothing)."""
    return parse_ranges(resources.files("opentracking").joinpath(APPLE_RANGES_FILE).read_text())


def apple_egress(ip: str) -> tuple[str, str] | None:
    """(network, source id) when `ip` is an Apple egress address, else None (also for "unknown" or junk)."""
    try:
        address = ipaddress.ip_address((ip or "").strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped  # ::ffff:17.x.y.z is the IPv4 address seen on a dual stack
    return apple_ranges()[address.version].find(int(address))


@dataclass(frozen=True)
class BotVerdict:
    bot: str  # "apple", "gmail", "generic" or ""
    reason: str


def classify(*, method: str, user_agent: str, seconds_after_accept: float | None, ip: str = "") -> BotVerdict:
    agent = (user_agent or "").strip()
    if method.upper() == "HEAD":
        return BotVerdict("generic", "HEAD request: scanners check links without loading images")
    egress = apple_egress(ip)
    if egress:
        network, source = egress
        also = " and a bare Mozilla/5.0 user agent" if agent == BARE_AGENT else ""
        return BotVerdict(
            "apple",
            f"Apple egress address ({network}, {_RANGE_SOURCES.get(source, source)}){also}: "
            "Apple Mail Privacy Protection proxy load",
        )
    if agent == BARE_AGENT:
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
