"""Geolocation of opens and clicks: the country from the registries' data shipped in iptocc, "Unknown" for
what has no country (private, reserved, junk) and for image proxies, whose address is not the reader's."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from opentracking.tracking import geolocation
from opentracking.tracking.anonymity import anonymize_ip

REFRESH_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "refresh_geolocation.py"
UNKNOWN = {"country": "Unknown", "region": "Unknown", "city": "Unknown"}


@pytest.mark.parametrize(
    ("ip", "country"),
    [
        ("8.8.8.8", "US"),  # ARIN
        ("1.0.16.1", "JP"),  # APNIC
        ("193.0.6.139", "NL"),  # RIPE NCC's own block, Amsterdam
        ("2001:4860:4860::8888", "US"),  # IPv6
        ("::ffff:8.8.8.8", "US"),  # the IPv4 reader as a dual-stack listener reports it
        (" 8.8.8.8 ", "US"),
    ],
)
def test_a_public_address_gets_the_country_its_block_was_assigned_to(ip, country):
    assert geolocation.locate(ip) == {"country": country, "region": "Unknown", "city": "Unknown"}


def test_an_anonymised_address_keeps_its_country():
    # registries assign nothing smaller than a /24 or a /48, so truncation loses no country
    assert geolocation.country_of(anonymize_ip("8.8.8.8")) == "US"
    assert geolocation.country_of(anonymize_ip("2001:4860:4860::8888")) == "US"


@pytest.mark.parametrize(
    "ip",
    ["127.0.0.1", "10.1.2.3", "192.168.0.1", "198.51.100.9", "::1", "fe80::1%eth0", "unknown", "", "junk"],
)
def test_what_has_no_country_is_unknown(ip):
    assert geolocation.locate(ip) == UNKNOWN


def test_an_image_proxys_address_is_not_the_readers():
    gmail = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
    assert geolocation.locate("66.249.84.1", user_agent=gmail) == UNKNOWN
    assert geolocation.locate("17.58.0.1", proxied_by_apple=True) == UNKNOWN
    # the same address without the proxy's marks is located
    assert geolocation.locate("66.249.84.1")["country"] == "US"


def test_without_the_compiled_data_events_say_unknown_and_nothing_fails(monkeypatch):
    # The sam local emulation runs the arm64 layer's packages on an x86_64 Python: iptocc's arm64 binary
    # cannot load there. A None entry in sys.modules makes `import iptocc` raise ImportError the same way.
    with monkeypatch.context() as patched:
        patched.setitem(sys.modules, "iptocc", None)
        geolocation._registry_data.cache_clear()
        try:
            assert geolocation.locate("8.8.8.8") == UNKNOWN
        finally:
            geolocation._registry_data.cache_clear()
    assert geolocation.locate("8.8.8.8")["country"] == "US"


def test_the_refresh_moves_every_pin_and_refuses_a_file_without_one():
    # `make geolocation` needs the package index; its file rewriting is checked here on the real files.
    spec = importlib.util.spec_from_file_location("refresh_geolocation", REFRESH_SCRIPT)
    refresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(refresh)
    for path in refresh.PINNED_FILES:
        text = path.read_text()
        moved = refresh.repin(text, "9.9.9")
        assert "iptocc==9.9.9\n" in moved and moved.count("iptocc==") == 1
        assert moved.replace("iptocc==9.9.9", "") == re.sub(r"iptocc==\S+", "", text)  # nothing else moved
    with pytest.raises(ValueError, match="found 0"):
        refresh.repin("boto3==1.0\n", "9.9.9")
    with pytest.raises(ValueError, match="release number"):
        refresh.repin("iptocc==1.0\n", "1.0; rm -rf /")
