"""The tracking-CNAME checker against a real authoritative DNS server on 127.0.0.1 (devstack.dns_server)."""

from __future__ import annotations

import json
import socket
import threading
import time

import dns.resolver
import pytest

from devstack.dns_server import DnsServer
from opentracking.domains.dns_check import (
    MAX_HOPS,
    NAMESERVERS_ENV,
    CnameCheck,
    CnameStatus,
    check_cname,
    check_many,
    make_resolver,
    parse_nameservers,
)

pytestmark = [pytest.mark.integration, pytest.mark.allow_hosts(["127.0.0.1"])]

TARGET = "track.opentracking.test"
RECORDS = {
    "email.example.com.": ("CNAME", f"{TARGET}."),
    "email.chained.com.": ("CNAME", "alias.example.net."),
    "alias.example.net.": ("CNAME", "edge.example.org."),
    "edge.example.org.": ("CNAME", f"{TARGET}."),
    "email.wrong.com.": ("CNAME", "mailgun.org."),
    "mailgun.org.": ("A", "192.0.2.10"),
    "email.dangling.com.": ("CNAME", "gone.example.org."),
    "email.address.com.": [("A", "192.0.2.20"), ("AAAA", "2001:db8::20")],
    "email.text.com.": ("TXT", '"v=spf1 -all"'),
    "email.loop.com.": ("CNAME", "a.loop.com."),
    "a.loop.com.": ("CNAME", "b.loop.com."),
    "b.loop.com.": ("CNAME", "email.loop.com."),
    f"{TARGET}.": ("A", "192.0.2.1"),
}


@pytest.fixture
def server():
    with DnsServer(RECORDS) as dns_server:
        yield dns_server


@pytest.fixture
def resolver(server: DnsServer) -> dns.resolver.Resolver:
    return make_resolver([("127.0.0.1", server.port)], timeout=0.5, lifetime=1.0)


def test_direct_cname_is_valid(server, resolver):
    # GIVEN email.example.com is a CNAME for the tracking hostname
    # WHEN it is checked
    result = check_cname("email.example.com", TARGET, resolver=resolver)
    # THEN it is valid, the one hop is reported and Mailgun would call it valid
    assert result.status is CnameStatus.VALID
    assert result.valid
    assert result.mailgun_valid == "valid"
    assert result.found == TARGET
    assert result.chain == ["email.example.com", TARGET]
    assert result.name == "email.example.com"
    assert result.expected == TARGET
    assert "nothing needs to change" in result.detail


def test_cname_chain_through_customer_alias_is_valid_and_reported(server, resolver):
    # GIVEN email.chained.com -> alias.example.net -> edge.example.org -> the tracking hostname
    # WHEN it is checked
    result = check_cname("email.chained.com", TARGET, resolver=resolver)
    # THEN it is valid, the first target is `found` and the whole chain is reported
    assert result.status is CnameStatus.VALID
    assert result.found == "alias.example.net"
    assert result.chain == ["email.chained.com", "alias.example.net", "edge.example.org", TARGET]
    assert "email.chained.com -> alias.example.net -> edge.example.org -> " + TARGET in result.detail
    # AND the CNAME type was asked for at each hop, never anything else
    assert {q.rdtype for q in server.queries} == {"CNAME"}


def test_wrong_target_reports_what_was_found_and_what_is_expected(server, resolver):
    # GIVEN email.wrong.com still points at Mailgun
    # WHEN it is checked
    result = check_cname("email.wrong.com", TARGET, resolver=resolver)
    # THEN it is a wrong target, naming the target found and the one expected
    assert result.status is CnameStatus.WRONG_TARGET
    assert result.mailgun_valid == "invalid"
    assert result.found == "mailgun.org"
    assert result.chain == ["email.wrong.com", "mailgun.org"]
    assert "mailgun.org" in result.detail
    assert TARGET in result.detail
    assert "DNS provider" in result.detail


def test_dangling_cname_is_a_wrong_target(server, resolver):
    # GIVEN email.dangling.com is a CNAME for a name that does not exist
    # WHEN it is checked
    result = check_cname("email.dangling.com", TARGET, resolver=resolver)
    # THEN it is a wrong target, and the detail says the target does not exist
    assert result.status is CnameStatus.WRONG_TARGET
    assert result.found == "gone.example.org"
    assert "does not exist" in result.detail


def test_missing_name_is_nxdomain_and_not_retried(server, resolver):
    # GIVEN no records at all for email.missing.com
    # WHEN it is checked
    result = check_cname("email.missing.com", TARGET, resolver=resolver, retries=2)
    # THEN it is NXDOMAIN, the user is told to add the CNAME, and one query was enough
    assert result.status is CnameStatus.NXDOMAIN
    assert result.mailgun_valid == "invalid"
    assert result.found is None
    assert result.chain == ["email.missing.com"]
    assert "does not exist" in result.detail
    assert f"add a CNAME record for email.missing.com with the value {TARGET}" in result.detail
    assert server.query_count("email.missing.com") == 1


def test_address_records_instead_of_cname_is_not_cname(server, resolver):
    # GIVEN email.address.com has A and AAAA records but no CNAME
    # WHEN it is checked
    result = check_cname("email.address.com", TARGET, resolver=resolver)
    # THEN it is not_cname, and the detail shows the addresses and says to replace them with the CNAME
    assert result.status is CnameStatus.NOT_CNAME
    assert result.mailgun_valid == "invalid"
    assert result.found is None
    assert "192.0.2.20" in result.detail
    assert "2001:db8::20" in result.detail
    assert TARGET in result.detail
    assert server.query_count("email.address.com", "CNAME") == 1


def test_name_with_only_txt_is_no_data(server, resolver):
    # GIVEN email.text.com exists with only a TXT record
    # WHEN it is checked
    result = check_cname("email.text.com", TARGET, resolver=resolver)
    # THEN it is no_data: the name exists, there is no CNAME and no address; not retried
    assert result.status is CnameStatus.NO_DATA
    assert result.mailgun_valid == "invalid"
    assert "no CNAME record" in result.detail
    assert TARGET in result.detail
    assert server.query_count("email.text.com", "CNAME") == 1


@pytest.mark.parametrize("retries", [0, 2])
def test_servfail_is_retried_then_reported(server, resolver, retries):
    # GIVEN the server answers SERVFAIL for email.example.com
    server.set_fault("email.example.com", "servfail")
    # WHEN it is checked
    result = check_cname("email.example.com", TARGET, resolver=resolver, retries=retries)
    # THEN it is servfail ("unknown" to Mailgun) after exactly retries + 1 queries
    assert result.status is CnameStatus.SERVFAIL
    assert result.mailgun_valid == "unknown"
    assert server.query_count("email.example.com") == retries + 1
    assert "SERVFAIL" in result.detail
    assert f"{retries + 1} attempt" in result.detail


def test_servfail_part_way_down_the_chain_keeps_the_chain(server, resolver):
    # GIVEN the customer's alias in the middle of the chain fails
    server.set_fault("alias.example.net", "servfail")
    # WHEN the tracking host is checked
    result = check_cname("email.chained.com", TARGET, resolver=resolver, retries=1)
    # THEN it is servfail, with the chain as far as it got, naming the failing hop
    assert result.status is CnameStatus.SERVFAIL
    assert result.chain == ["email.chained.com", "alias.example.net"]
    assert "alias.example.net" in result.detail
    assert server.query_count("alias.example.net") == 2


def test_unanswered_queries_time_out_within_a_bound(server):
    # GIVEN the server never answers for email.example.com, and a resolver with short timeouts
    server.set_fault("email.example.com", "timeout")
    quick = make_resolver([("127.0.0.1", server.port)], timeout=0.2, lifetime=0.5)
    # WHEN it is checked with two retries
    started = time.monotonic()
    result = check_cname("email.example.com", TARGET, resolver=quick, retries=2)
    elapsed = time.monotonic() - started
    # THEN it reports a timeout ("unknown" to Mailgun) and returns in bounded time
    assert result.status is CnameStatus.TIMEOUT
    assert result.mailgun_valid == "unknown"
    assert "3 attempts" in result.detail
    assert elapsed < 5.0  # boundedness, not performance: 3 attempts x 0.5 s lifetime plus backoff
    assert server.query_count("email.example.com") >= 3


def test_refused_is_reported_without_retry(server, resolver):
    # GIVEN the server refuses queries for email.example.com
    server.set_fault("email.example.com", "refused")
    # WHEN it is checked
    result = check_cname("email.example.com", TARGET, resolver=resolver, retries=2)
    # THEN it is refused ("unknown" to Mailgun), after one query
    assert result.status is CnameStatus.REFUSED
    assert result.mailgun_valid == "unknown"
    assert "REFUSED" in result.detail
    assert server.query_count("email.example.com") == 1


def test_cname_loop_is_an_error_and_does_not_hang(server, resolver):
    # GIVEN email.loop.com -> a.loop.com -> b.loop.com -> email.loop.com
    # WHEN it is checked
    started = time.monotonic()
    result = check_cname("email.loop.com", TARGET, resolver=resolver)
    # THEN it is an error naming the loop, not valid, and each name was asked once
    assert time.monotonic() - started < 5.0
    assert result.status is CnameStatus.ERROR
    assert not result.valid
    assert result.chain == ["email.loop.com", "a.loop.com", "b.loop.com", "email.loop.com"]
    assert "loop" in result.detail
    assert server.query_count("email.loop.com") == 1


def test_chain_longer_than_max_hops_is_an_error(server, resolver):
    # GIVEN a chain of 12 CNAMEs that eventually reaches the target
    hops = {f"h{i}.chain.test": ("CNAME", f"h{i + 1}.chain.test") for i in range(11)}
    hops["h11.chain.test"] = ("CNAME", TARGET)
    server.set_records(hops)
    # WHEN it is checked
    result = check_cname("h0.chain.test", TARGET, resolver=resolver)
    # THEN it stops after MAX_HOPS hops with an error
    assert result.status is CnameStatus.ERROR
    assert len(result.chain) == MAX_HOPS + 1
    assert f"longer than {MAX_HOPS} hops" in result.detail


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("EMAIL.Example.COM", TARGET),
        ("email.example.com.", f"{TARGET}."),
        ("Email.Example.Com.", "TRACK.OpenTracking.Test"),
        ("  email.example.com  ", TARGET),
    ],
)
def test_names_compare_case_insensitively_without_trailing_dots(server, resolver, name, expected):
    # GIVEN a valid CNAME, and names spelled in mixed case and with trailing dots
    # WHEN it is checked
    result = check_cname(name, expected, resolver=resolver)
    # THEN it is valid and every name is reported lower case without the trailing dot
    assert result.status is CnameStatus.VALID
    assert result.name == "email.example.com"
    assert result.expected == TARGET
    assert result.chain == ["email.example.com", TARGET]


def test_mixed_case_cname_target_in_dns_is_valid(server, resolver):
    # GIVEN the DNS provider stored the target in upper case with a trailing dot
    server.set_records({"email.upper.com": ("CNAME", "TRACK.OPENTRACKING.TEST.")})
    # WHEN it is checked
    result = check_cname("email.upper.com", TARGET, resolver=resolver)
    # THEN it is valid and the target is reported lower case
    assert result.status is CnameStatus.VALID
    assert result.found == TARGET


def test_record_fixed_while_running_is_seen_on_the_next_check(server, resolver):
    # GIVEN email.fixme.com is broken: first a wrong target
    server.set_records({"email.fixme.com": ("CNAME", "mailgun.org")})
    assert check_cname("email.fixme.com", TARGET, resolver=resolver).status is CnameStatus.WRONG_TARGET
    # WHEN the customer fixes it at their DNS provider
    server.set_records({"email.fixme.com": ("CNAME", TARGET)})
    # THEN the next check sees it valid (no cache in the way)
    assert check_cname("email.fixme.com", TARGET, resolver=resolver).status is CnameStatus.VALID
    # AND breaking it again (the record removed) is seen as well
    server.remove("email.fixme.com")
    assert check_cname("email.fixme.com", TARGET, resolver=resolver).status is CnameStatus.NXDOMAIN


def test_check_many_returns_fifty_results_in_order(server, resolver):
    # GIVEN 50 tracking hosts: valid, wrong, missing, address-only and servfailing ones, interleaved
    expected_statuses = []
    records = {}
    for i in range(50):
        name = f"email.d{i}.example"
        kind = i % 5
        if kind == 0:
            records[name] = ("CNAME", TARGET)
            expected_statuses.append(CnameStatus.VALID)
        elif kind == 1:
            records[name] = ("CNAME", "mailgun.org")
            expected_statuses.append(CnameStatus.WRONG_TARGET)
        elif kind == 2:
            expected_statuses.append(CnameStatus.NXDOMAIN)
        elif kind == 3:
            records[name] = ("A", f"192.0.2.{i}")
            expected_statuses.append(CnameStatus.NOT_CNAME)
        else:
            records[name] = ("CNAME", TARGET)
            server.set_fault(name, "servfail")
            expected_statuses.append(CnameStatus.SERVFAIL)
    server.set_records(records)
    names = [f"email.d{i}.example" for i in range(50)]
    # WHEN they are checked concurrently
    started = time.monotonic()
    results = check_many([(name, TARGET) for name in names], resolver=resolver, max_workers=8)
    # THEN the results come back in the order asked, each with its own status, in bounded time
    assert time.monotonic() - started < 30.0
    assert [r.name for r in results] == names
    assert [r.status for r in results] == expected_statuses
    assert check_many([], resolver=resolver) == []


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("127.0.0.1", [("127.0.0.1", 53)]),
        ("127.0.0.1:5353,10.0.0.2", [("127.0.0.1", 5353), ("10.0.0.2", 53)]),
        (" 10.0.0.1:53 , 10.0.0.2:1053 ", [("10.0.0.1", 53), ("10.0.0.2", 1053)]),
        ("10.0.0.1 10.0.0.2", [("10.0.0.1", 53), ("10.0.0.2", 53)]),
        ("::1", [("::1", 53)]),
        ("[::1]:5353", [("::1", 5353)]),
        ("[2001:db8::1]", [("2001:db8::1", 53)]),
    ],
)
def test_parse_nameservers_accepts_addresses_with_optional_ports(spec, expected):
    # GIVEN a nameserver list as OPENTRACKING_NAMESERVERS holds it
    # WHEN it is parsed
    # THEN each address comes back with its port, 53 by default
    assert parse_nameservers(spec) == expected


@pytest.mark.parametrize(
    "spec",
    ["", " , ", "localhost", "dns.google:53", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:x",
     "300.1.1.1", "[::1", "[::1]x", "[::1]:", "1.2.3.4:53:53", "127.0.0.1:٥٣"],
)  # fmt: skip
def test_parse_nameservers_rejects_garbage(spec):
    # GIVEN a malformed nameserver list
    # WHEN it is parsed
    # THEN a ValueError says so
    with pytest.raises(ValueError, match=r"nameserver"):
        parse_nameservers(spec)


def test_make_resolver_honours_the_environment(server, monkeypatch):
    # GIVEN OPENTRACKING_NAMESERVERS names the test server
    monkeypatch.setenv(NAMESERVERS_ENV, server.nameserver)
    # WHEN a resolver is made without explicit nameservers and a record is checked with it
    resolver = make_resolver(timeout=0.5, lifetime=1.0)
    result = check_cname("email.example.com", TARGET, resolver=resolver)
    # THEN the test server answered, and the resolver is configured as asked, without a cache
    assert result.status is CnameStatus.VALID
    assert server.query_count("email.example.com") == 1
    assert [(ns.address, ns.port) for ns in resolver.nameservers] == [("127.0.0.1", server.port)]
    assert (resolver.timeout, resolver.lifetime, resolver.cache) == (0.5, 1.0, None)


def test_make_resolver_rejects_a_malformed_environment(monkeypatch):
    # GIVEN OPENTRACKING_NAMESERVERS holds garbage
    monkeypatch.setenv(NAMESERVERS_ENV, "not-an-ip")
    # WHEN a resolver is made
    # THEN the error names the variable
    with pytest.raises(ValueError, match=NAMESERVERS_ENV):
        make_resolver()


def test_missing_system_resolver_configuration_is_a_clear_error(monkeypatch):
    # GIVEN no OPENTRACKING_NAMESERVERS and an unreadable /etc/resolv.conf
    monkeypatch.delenv(NAMESERVERS_ENV, raising=False)

    def unreadable(self, filename="/etc/resolv.conf"):
        raise dns.resolver.NoResolverConfiguration("cannot read " + str(filename))

    monkeypatch.setattr(dns.resolver.Resolver, "read_resolv_conf", unreadable)
    # WHEN a resolver is made and a record is checked
    resolver = make_resolver()
    result = check_cname("email.example.com", TARGET, resolver=resolver)
    # THEN nothing raises: the check is an error that says no resolver is configured
    assert list(resolver.nameservers) == []
    assert result.status is CnameStatus.ERROR
    assert result.mailgun_valid == "unknown"
    assert "no DNS resolver" in result.detail


def test_unreachable_resolver_is_an_error_not_an_exception():
    # GIVEN a resolver pointing at a loopback port where nothing listens
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    resolver = make_resolver([("127.0.0.1", port)], timeout=0.2, lifetime=0.5)
    # WHEN a record is checked
    result = check_cname("email.example.com", TARGET, resolver=resolver, retries=1)
    # THEN it reports that the answer is unknown instead of raising
    assert result.status in {CnameStatus.ERROR, CnameStatus.TIMEOUT}
    assert result.mailgun_valid == "unknown"


def test_invalid_names_and_arguments(resolver):
    # GIVEN a malformed tracking host name
    # WHEN it is checked
    result = check_cname("email..example.com", TARGET, resolver=resolver)
    # THEN it is an error result, not an exception
    assert result.status is CnameStatus.ERROR
    assert "not a valid DNS name" in result.detail
    # AND misuse by the caller raises
    with pytest.raises(ValueError, match="expected target"):
        check_cname("email.example.com", "bad..target", resolver=resolver)
    with pytest.raises(ValueError, match="retries"):
        check_cname("email.example.com", TARGET, resolver=resolver, retries=-1)
    with pytest.raises(ValueError, match="max_workers"):
        check_many([("email.example.com", TARGET)], resolver=resolver, max_workers=0)


def test_as_dict_is_json_safe(server, resolver):
    # GIVEN a check through a chain
    result = check_cname("email.chained.com", TARGET, resolver=resolver)
    # WHEN it is turned into a dict and through JSON
    data = json.loads(json.dumps(result.as_dict()))
    # THEN every field survives, the status as its string value
    assert data["status"] == "valid"
    assert data["valid"] is True
    assert data["mailgun_valid"] == "valid"
    assert data["chain"] == result.chain
    assert data["found"] == "alias.example.net"
    assert data["checked_at"] == pytest.approx(time.time(), abs=60)
    assert isinstance(result, CnameCheck)
    with pytest.raises(AttributeError):
        result.status = CnameStatus.ERROR  # type: ignore[misc]  # frozen


def test_truncated_udp_answers_are_retried_over_tcp(server, resolver):
    # GIVEN the server truncates UDP answers for email.example.com
    server.set_fault("email.example.com", "truncate")
    # WHEN it is checked
    result = check_cname("email.example.com", TARGET, resolver=resolver)
    # THEN the resolver retried over TCP and got the answer
    assert result.status is CnameStatus.VALID
    assert [q.transport for q in server.queries if q.name == "email.example.com"] == ["udp", "tcp"]


def test_zone_text_can_be_served():
    # GIVEN a server loaded from master-file text
    zone = f"$ORIGIN example.io.\n$TTL 300\nemail IN CNAME {TARGET}.\nwww IN A 192.0.2.5\n"
    with DnsServer(zone_text=zone) as dns_server:
        resolver = make_resolver([("127.0.0.1", dns_server.port)], timeout=0.5, lifetime=1.0)
        # WHEN its records are checked
        # THEN they are answered as written
        assert check_cname("email.example.io", TARGET, resolver=resolver).status is CnameStatus.VALID
        assert check_cname("www.example.io", TARGET, resolver=resolver).status is CnameStatus.NOT_CNAME
        assert check_cname("example.io", TARGET, resolver=resolver).status is CnameStatus.NO_DATA


def test_dns_server_stops_within_a_bounded_time():
    # GIVEN a running server with an idle TCP client connected and a query it never answers
    dns_server = DnsServer(RECORDS, port=0).start()
    assert dns_server.nameserver == f"127.0.0.1:{dns_server.port}"
    idle = socket.create_connection(("127.0.0.1", dns_server.port), timeout=1.0)
    dns_server.set_fault("email.example.com", "timeout")
    hanging = threading.Thread(
        target=check_cname,
        args=("email.example.com", TARGET),
        kwargs={"resolver": make_resolver([("127.0.0.1", dns_server.port)], timeout=0.2, lifetime=0.4)},
        daemon=True,
    )
    hanging.start()
    time.sleep(0.1)
    # WHEN it is stopped
    started = time.monotonic()
    dns_server.stop()
    elapsed = time.monotonic() - started
    # THEN it stops promptly, its port is free again and it can be stopped twice
    assert elapsed < 2.0
    assert not dns_server.running
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(("127.0.0.1", idle.getpeername()[1]))
    dns_server.stop()
    idle.close()
    hanging.join(5.0)
    assert not hanging.is_alive()
