"""Where an open or a click came from: the `geolocation` of Mailgun's events, offline.

The country comes from `iptocc` (PyPI, MIT or Apache-2.0), which embeds the five Regional Internet
Registries' delegation files in its wheel and is released again from them every night; registry data is
public and free to redistribute. It names the country a block was *assigned* to, which agrees with
commercial databases for about 95% of IPv4 addresses, and it has no region or city: those stay
"Unknown", as Mailgun writes them when it does not know. `make geolocation` moves the pin to the newest
release (the data's date is the release's). A /24 (IPv4) or /48 (IPv6) anonymised address still has its
country: registries never assign anything smaller.

An image proxy's address says where the proxy is, not the reader: Apple's Mail Privacy Protection
egress (the bot verdict "apple" from an Apple address) and GoogleImageProxy both get "Unknown", and their
client-info and bot verdict keep saying which proxy it was.
"""

from __future__ import annotations

import ipaddress
from functools import cache
from types import ModuleType
from typing import Any

from opentracking.core.observability import logger

UNKNOWN = "Unknown"
_PROXY_AGENTS = ("GoogleImageProxy",)
# Registries use EU and AP for blocks assigned to a region rather than a country: Mailgun's field holds a
# country, so those are as unknown as an unassigned block.
_REGIONS = frozenset({"EU", "AP"})


def unknown() -> dict[str, str]:
    return {"country": UNKNOWN, "region": UNKNOWN, "city": UNKNOWN}


def locate(ip: str, *, user_agent: str = "", proxied_by_apple: bool = False) -> dict[str, str]:
    """Mailgun's geolocation object for a reader's address; never raises (an event is never lost to it)."""
    where = unknown()
    if proxied_by_apple or any(agent in (user_agent or "") for agent in _PROXY_AGENTS):
        return where
    country = country_of(ip)
    if country:
        where["country"] = country
    return where


def country_of(ip: str) -> str | None:
    """The ISO 3166-1 alpha-2 code of the country the address's block was assigned to, or None (private,
    reserved and unassigned addresses, "unknown", junk)."""
    try:
        address = ipaddress.ip_address((ip or "").strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:a.b.c.d is the IPv4 reader seen on a dual-stack listener
    if not address.is_global:
        return None
    lookup = _registry_data()
    if lookup is None:
        return None
    code: Any = lookup.country_code(str(address))
    if isinstance(code, str) and len(code) == 2 and code.isalpha() and code not in _REGIONS:
        return code
    return None


@cache
def _registry_data() -> ModuleType | None:
    """iptocc, imported on first use (2 ms; the pixel never imports this module). When its compiled part
    cannot load (a wheel for another architecture, as in the sam local emulation of arm64 on an x86_64
    machine), events say "Unknown" and a warning says why, once per process."""
    try:
        import iptocc
    except ImportError as error:
        logger.warning(
            "IP geolocation unavailable: events record the country as Unknown", extra={"error": str(error)}
        )
        return None
    return iptocc
