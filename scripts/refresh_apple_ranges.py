"""Refresh the Apple egress ranges that tell Mail Privacy Protection loads from a reader's
(layers/opentracking/opentracking/data/apple_mpp_ranges.csv) from Apple's published iCloud Private Relay
egress list. Needs network access; `make apple-ranges` runs it. Tests never do.

    python scripts/refresh_apple_ranges.py [--source URL-or-file] [--out PATH]

Apple's list has one egress prefix per line, then its geolocation (`prefix,country,region,city,`). Its
prefixes are collapsed (adjacent and nested ones merged) and replace the file's `private-relay` rows; the
other rows (Apple's own address space, from their registries) and the header are kept, and the header's
`snapshot:` line is rewritten with today's date and where the list came from.
"""

from __future__ import annotations

import argparse
import csv
import io
import ipaddress
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

APPLE_EGRESS_URL = "https://mask-api.icloud.com/egress-ip-ranges.csv"
ROOT = Path(__file__).resolve().parent.parent
RANGES_FILE = ROOT / "layers/opentracking/opentracking/data/apple_mpp_ranges.csv"
SOURCE = "private-relay"


def egress_networks(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Apple's CSV as collapsed networks, IPv4 first. A line that is not a prefix is an error, not skipped:
    a changed format must be looked at, not half-imported."""
    by_version: dict[int, list] = {4: [], 6: []}
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not row[0].strip():
            continue
        try:
            network = ipaddress.ip_network(row[0].strip(), strict=False)
        except ValueError as exc:
            raise ValueError(f"line {number}: {row[0]!r} is not an address prefix") from exc
        by_version[network.version].append(network)
    if not by_version[4] and not by_version[6]:
        raise ValueError("no prefixes in the egress list")
    return [*ipaddress.collapse_addresses(by_version[4]), *ipaddress.collapse_addresses(by_version[6])]


def rewrite(current: str, networks: list, *, origin: str, today: str) -> str:
    """The ranges file with its private-relay rows replaced by `networks` and its snapshot line dated."""
    header: list[str] = []
    rows: list[str] = []
    for line in current.splitlines():
        if line.startswith("#"):
            if line.startswith("# snapshot:"):
                line = f"# snapshot: {today} (private-relay rows fetched from {origin} on {today})"
            header.append(line)
        elif line.strip() and line != "network,source" and not line.endswith(f",{SOURCE}"):
            rows.append(line)
    rows += [f"{network},{SOURCE}" for network in networks]
    return "\n".join([*header, "network,source", *rows]) + "\n"


def fetch(source: str) -> str:
    if source.startswith("https://"):
        with urllib.request.urlopen(source, timeout=120) as response:  # noqa: S310 - https only, by the check above
            return response.read().decode("utf-8")
    return Path(source).read_text(encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=APPLE_EGRESS_URL, help="Apple's egress CSV: https URL or a file")
    parser.add_argument("--out", type=Path, default=RANGES_FILE)
    args = parser.parse_args(argv)
    networks = egress_networks(fetch(args.source))
    today = datetime.now(UTC).date().isoformat()
    text = rewrite(args.out.read_text(encoding="utf-8"), networks, origin=args.source, today=today)
    temporary = args.out.with_suffix(".tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(args.out)
    print(f"{args.out}: {len(networks)} private-relay networks from {args.source}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
