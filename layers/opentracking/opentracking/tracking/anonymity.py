"""IP address anonymisation, on its own so the pixel imports nothing else with it (cold starts)."""

from __future__ import annotations

import ipaddress

IPV4_PREFIX = 24  # the last octet goes: the address names a network of 256 hosts, not a reader
IPV6_PREFIX = 48  # a site's routing prefix stays; the 80 bits that name a subnet and a host go
UNKNOWN_IP = "unknown"


def anonymize_ip(address: str) -> str:
    """The address with its host part zeroed: IPv4 to /24, IPv6 to /48 (an IPv4-mapped IPv6 address as
    IPv4). Anything that does not parse is stored as "unknown" rather than risk keeping it whole."""
    try:
        parsed = ipaddress.ip_address((address or "").strip().split("%", 1)[0])
    except ValueError:
        return UNKNOWN_IP
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    prefix = IPV4_PREFIX if parsed.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network(f"{parsed}/{prefix}", strict=False).network_address)


def is_anonymized(address: str) -> bool:
    return address == UNKNOWN_IP or anonymize_ip(address) == address
