"""Bot classification by address: Apple's egress ranges, shipped as dated data with their sources, make a
load Apple Mail Privacy Protection's whatever the user agent says. Real Apple Mail user agents, addresses
inside and outside the ranges, IPv4 and IPv6."""

from __future__ import annotations

import importlib.util
import ipaddress
from pathlib import Path

import pytest

from opentracking.tracking import bots

# Apple Mail as it loads images itself (no MPP): macOS and iOS. Neither says "bot" by its user agent.
APPLE_MAIL_MAC = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
APPLE_MAIL_IOS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Mobile/15E148"
)
REFRESH_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "refresh_apple_ranges.py"


def classify(ip: str, user_agent: str = APPLE_MAIL_MAC, method: str = "GET") -> bots.BotVerdict:
    # an hour after acceptance: the timing rule stays out of the way
    return bots.classify(method=method, user_agent=user_agent, seconds_after_accept=3600, ip=ip)


@pytest.mark.parametrize(
    ("ip", "network"),
    [
        ("17.58.63.1", "17.0.0.0/8"),  # Apple Inc.'s ARIN allocation
        ("17.0.0.0", "17.0.0.0/8"),  # first address of the range
        ("17.255.255.255", "17.0.0.0/8"),  # last address of the range
        ("::ffff:17.253.1.9", "17.0.0.0/8"),  # the IPv4 address as a dual-stack socket reports it
        ("2620:149:a42::1", "2620:149::/32"),
        ("2a01:b740:a42:8::7", "2a01:b740::/32"),
        ("2403:300:a08:f000::1", "2403:300::/32"),
    ],
)
def test_a_load_from_an_apple_egress_address_is_an_apple_bot(ip, network):
    # GIVEN Apple Mail's own user agent, which alone would pass for a person
    assert classify("198.51.100.9").bot == ""
    # WHEN it comes from Apple's address space, THEN it is MPP's proxy, and the reason names the range
    verdict = classify(ip)
    assert verdict.bot == "apple"
    assert f"Apple egress address ({network}," in verdict.reason
    assert "Mozilla/5.0 user agent" not in verdict.reason  # not the bare-agent reason


@pytest.mark.parametrize(
    "ip",
    [
        "16.255.255.255",  # just below 17.0.0.0/8
        "18.0.0.0",  # just above it
        "198.51.100.9",
        "2620:14a::1",  # just past 2620:149::/32
        "2620:148:ffff:ffff:ffff:ffff:ffff:ffff",  # just before it
        "2001:db8::1",
        "::ffff:198.51.100.9",
        "unknown",  # what the pixel stores without a source address
        "",
        "17.0.0.0/8",  # not an address
    ],
)
def test_addresses_outside_apples_ranges_leave_a_person_a_person(ip):
    verdict = classify(ip, user_agent=APPLE_MAIL_IOS)
    assert verdict == bots.BotVerdict("", "looks like a person's mail client")


def test_the_bare_agent_and_the_address_each_say_apple_with_their_own_reason():
    by_agent = classify("198.51.100.9", user_agent="Mozilla/5.0")
    by_address = classify("17.1.2.3")
    by_both = classify("17.1.2.3", user_agent="Mozilla/5.0")
    assert by_agent.bot == by_address.bot == by_both.bot == "apple"
    # three different stored reasons, so the diagnosis can say which evidence there was
    assert len({by_agent.reason, by_address.reason, by_both.reason}) == 3
    assert "bare Mozilla/5.0 user agent" in by_both.reason and "17.0.0.0/8" in by_both.reason


def test_a_head_request_from_apple_is_still_a_scanner():
    # HEAD loads no image: whatever the address, it is a link checker
    assert classify("17.1.2.3", method="HEAD").bot == "generic"


def test_ranges_merge_nested_and_touching_networks_and_find_by_bisection():
    text = "# a comment\nnetwork,source\n10.0.0.0/8,a\n10.1.0.0/16,b\n11.0.0.0/8,c\n13.0.0.0/8,d\n::/128,e\n"
    ranges = bots.parse_ranges(text)
    v4 = ranges[4]
    # 10/8 swallows 10.1/16; 11/8 touches 10/8 and joins it; 13/8 stays apart (12/8 is the gap)
    assert v4.firsts == [0x0A000000, 0x0D000000]
    assert v4.lasts == [0x0BFFFFFF, 0x0DFFFFFF]
    assert v4.find(0x0A010203) == ("10.0.0.0/8", "a")
    assert v4.find(0x0B000000) == ("10.0.0.0/8", "a")
    assert v4.find(0x0C000000) is None
    assert v4.find(0x09FFFFFF) is None
    assert v4.find(0x0E000000) is None
    assert ranges[6].find(0) == ("::/128", "e")
    assert ranges[6].find(1) is None


def test_the_shipped_ranges_file_is_dated_sourced_and_sorted():
    from importlib import resources

    text = resources.files("opentracking").joinpath(bots.APPLE_RANGES_FILE).read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert any(line.startswith("# snapshot: 20") for line in header)
    assert any("https://mask-api.icloud.com/egress-ip-ranges.csv" in line for line in header)
    assert any("licence" in line for line in header)
    ranges = bots.apple_ranges()
    for version in (4, 6):
        r = ranges[version]
        assert r.firsts, f"no IPv{version} ranges shipped"
        # disjoint and sorted, which the binary search relies on
        assert all(a <= b for a, b in zip(r.firsts, r.lasts, strict=True))
        assert all(b < c for b, c in zip(r.lasts, r.firsts[1:], strict=False))
        # every source id has a meaning in the stored reason
        assert {source for _, source in r.labels} <= set(bots._RANGE_SOURCES)


def test_the_refresh_script_replaces_private_relay_rows_and_keeps_apples_own(tmp_path):
    # The script is run by hand with network access; here it reads a local copy of Apple's CSV format.
    spec = importlib.util.spec_from_file_location("refresh_apple_ranges", REFRESH_SCRIPT)
    refresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(refresh)
    current = tmp_path / "ranges.csv"
    current.write_text(
        "# snapshot: 2000-01-01 (old)\nnetwork,source\n17.0.0.0/8,apple-assigned\n"
        "203.0.113.0/24,private-relay\n"
    )
    apple_csv = tmp_path / "egress.csv"
    apple_csv.write_text(
        "172.224.226.0/27,GB,GB-EN,London,\n172.224.226.32/27,GB,GB-EN,London,\n"
        "2a02:26f7:b3c0:4000::/64,GB,GB-EN,London,\n"
    )
    assert refresh.main(["--source", str(apple_csv), "--out", str(current)]) == 0
    text = current.read_text()
    assert "203.0.113.0/24" not in text  # the old relay rows are gone
    assert "17.0.0.0/8,apple-assigned" in text  # Apple's own space stays
    assert "172.224.226.0/26,private-relay" in text  # two adjacent /27s collapse into one /26
    assert "2a02:26f7:b3c0:4000::/64,private-relay" in text
    assert f"fetched from {apple_csv}" in text
    found = bots.parse_ranges(text)[4].find(int(ipaddress.ip_address("172.224.226.40")))
    assert found == ("172.224.226.0/26", "private-relay")
    # a line that is not a prefix stops the refresh instead of importing half a list
    apple_csv.write_text("172.224.226.0/27,GB\n<html>,,\n")
    with pytest.raises(ValueError, match="line 2"):
        refresh.main(["--source", str(apple_csv), "--out", str(current)])
