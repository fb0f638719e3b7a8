"""Check that a domain's tracking host is a CNAME for this deployment's tracking hostname.

Each sending domain `example.com` has a tracking host `email.example.com` (the prefix is the domain's
web_prefix) that must be a CNAME pointing at the hostname this deployment serves tracking from. The
scheduled checker and the domains API's `verify` call `check_cname` and show its `detail` to the user.

    resolver = make_resolver()  # OPENTRACKING_NAMESERVERS, else /etc/resolv.conf
    result = check_cname("email.example.com", "track.example.net", resolver=resolver)
    result.status, result.found, result.chain, result.detail, result.mailgun_valid

The CNAME type is queried directly, hop by hop, so the whole chain is seen even through a recursive
resolver: the record is valid when the expected target appears anywhere in the chain (a customer may
CNAME through an alias of their own). Names are compared case-insensitively without trailing dots.
Timeouts and SERVFAIL are retried `retries` times, each attempt bounded by the resolver's lifetime and the
whole check by `lifetime * (retries + 2)`; NXDOMAIN and empty answers are final. DNS outcomes never raise:
they are statuses. Only misuse (a bad expected target, negative retries, garbage nameservers) raises.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import dns.exception
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.rrset

NAMESERVERS_ENV = "OPENTRACKING_NAMESERVERS"
MAX_HOPS = 8
DEFAULT_PORT = 53


class CnameStatus(StrEnum):
    VALID = "valid"
    WRONG_TARGET = "wrong_target"  # a CNAME (chain) that never reaches the expected target
    NXDOMAIN = "nxdomain"  # the name does not exist
    NO_DATA = "no_data"  # the name exists but has no CNAME and no A/AAAA
    NOT_CNAME = "not_cname"  # the name has A/AAAA records instead of a CNAME
    SERVFAIL = "servfail"
    TIMEOUT = "timeout"
    REFUSED = "refused"
    ERROR = "error"  # a CNAME loop, a chain too long, no resolver, an unreachable resolver, a bad name


_UNKNOWN = frozenset({CnameStatus.TIMEOUT, CnameStatus.SERVFAIL, CnameStatus.REFUSED, CnameStatus.ERROR})


@dataclass(frozen=True)
class CnameCheck:
    """The outcome of one check. `detail` is one sentence a user can act on."""

    name: str
    expected: str
    status: CnameStatus
    found: str | None = None
    chain: list[str] = field(default_factory=list)
    detail: str = ""
    checked_at: float = field(default_factory=time.time)

    @property
    def valid(self) -> bool:
        return self.status is CnameStatus.VALID

    @property
    def mailgun_valid(self) -> Literal["valid", "invalid", "unknown"]:
        """The value of the `valid` field Mailgun shows for a DNS record."""
        if self.status is CnameStatus.VALID:
            return "valid"
        if self.status in _UNKNOWN:
            return "unknown"
        return "invalid"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "expected": self.expected,
            "status": str(self.status),
            "valid": self.valid,
            "mailgun_valid": self.mailgun_valid,
            "found": self.found,
            "chain": list(self.chain),
            "detail": self.detail,
            "checked_at": self.checked_at,
        }


# ---------------------------------------------------------------------------------------------- resolvers


def parse_nameservers(spec: str) -> list[tuple[str, int]]:
    """`"127.0.0.1:5353, 10.0.0.2 [::1]:53"` -> `[("127.0.0.1", 5353), ("10.0.0.2", 53), ("::1", 53)]`.

    Entries are IP addresses (v4, v6 bare or bracketed), each with an optional port, separated by commas
    or whitespace. Raises ValueError on anything else, including an empty list.
    """
    if not isinstance(spec, str):
        raise TypeError(f"nameservers must be a string, not {type(spec).__name__}")
    entries = [entry for entry in spec.replace(",", " ").split() if entry]
    if not entries:
        raise ValueError("no nameservers given")
    return [_parse_nameserver(entry) for entry in entries]


def _parse_nameserver(entry: str) -> tuple[str, int]:
    port_text: str | None = None
    if entry.startswith("["):
        host, bracket, rest = entry[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"bad nameserver {entry!r}: expected [IPv6] or [IPv6]:port")
        port_text = rest[1:] if rest else None
    elif entry.count(":") == 1:
        host, port_text = entry.split(":")
    else:
        host = entry  # IPv4, or a bare IPv6 address (which cannot carry a port)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"bad nameserver {entry!r}: {host!r} is not an IP address") from None
    port = DEFAULT_PORT
    if port_text is not None:
        if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"bad nameserver {entry!r}: port must be 1-65535")
        port = int(port_text)
    return str(address), port


def _checked(nameserver: tuple[str, int]) -> tuple[str, int]:
    host, port = nameserver
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"bad nameserver {host!r}: not an IP address") from None
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ValueError(f"bad nameserver port {port!r}: must be 1-65535")
    return str(address), port


def make_resolver(
    nameservers: Sequence[tuple[str, int]] | None = None, *, timeout: float = 2.0, lifetime: float = 5.0
) -> dns.resolver.Resolver:
    """A resolver without a cache (a fixed record is seen at once) that never retries SERVFAIL itself.

    `nameservers` None means OPENTRACKING_NAMESERVERS when set, else the system configuration; when that
    cannot be read the resolver has no nameservers and checks report an `error` saying so.
    """
    if not timeout > 0 or not lifetime > 0:
        raise ValueError("timeout and lifetime must be positive")
    if nameservers is None:
        spec = os.environ.get(NAMESERVERS_ENV, "").strip()
        if spec:
            try:
                nameservers = parse_nameservers(spec)
            except ValueError as error:
                raise ValueError(f"{NAMESERVERS_ENV}: {error}") from None
    if nameservers is not None:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(*_checked(ns)) for ns in nameservers]
    else:
        try:
            resolver = dns.resolver.Resolver(configure=True)
        except (dns.resolver.NoResolverConfiguration, OSError):
            resolver = dns.resolver.Resolver(configure=False)
    resolver.timeout = timeout
    resolver.lifetime = lifetime
    resolver.cache = None
    resolver.retry_servfail = False
    resolver.rotate = False
    resolver.use_search_by_default = False
    return resolver


# ---------------------------------------------------------------------------------------------- lookups

_Kind = Literal["answer", "nodata", "nxdomain", "servfail", "timeout", "refused", "error"]
_RETRIED = frozenset({"servfail", "timeout"})


@dataclass(frozen=True)
class _Outcome:
    kind: _Kind
    rrset: dns.rrset.RRset | None = None
    reason: str = ""
    attempts: int = 1


def _query_once(
    resolver: dns.resolver.Resolver, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType, lifetime: float
) -> _Outcome:
    try:
        answer = resolver.resolve(qname, rdtype, search=False, raise_on_no_answer=False, lifetime=lifetime)
    except dns.resolver.NXDOMAIN:
        return _Outcome("nxdomain")
    except dns.resolver.YXDOMAIN:
        return _Outcome("error", reason="the name is too long after DNAME substitution")
    except dns.resolver.NoNameservers as error:
        return _classify_no_nameservers(error)
    except dns.exception.Timeout:
        return _Outcome("timeout")
    except dns.exception.DNSException as error:
        return _Outcome("error", reason=str(error) or type(error).__name__)
    except OSError as error:
        return _Outcome("error", reason=f"the DNS resolver could not be used ({error})")
    if answer.rrset is None:
        return _Outcome("nodata")
    return _Outcome("answer", rrset=answer.rrset)


def _classify_no_nameservers(error: dns.resolver.NoNameservers) -> _Outcome:
    """Every nameserver failed; say how. SERVFAIL wins (it is worth a retry), then REFUSED."""
    failures = error.kwargs.get("errors") or []
    rcodes = {response.rcode() for *_, response in failures if response is not None}
    if dns.rcode.SERVFAIL in rcodes:
        return _Outcome("servfail")
    if dns.rcode.REFUSED in rcodes:
        return _Outcome("refused")
    if any(isinstance(problem, dns.exception.Timeout) for _, _, _, problem, _ in failures):
        return _Outcome("timeout")
    reasons = []
    for server, _tcp, port, problem, response in failures:
        what = dns.rcode.to_text(response.rcode()) if response is not None else str(problem)
        reasons.append(f"{server} port {port}: {what}")
    if not reasons:
        return _Outcome("error", reason="no DNS nameservers are configured")
    return _Outcome("error", reason="no DNS server gave a usable answer (" + "; ".join(reasons) + ")")


def _lookup(
    resolver: dns.resolver.Resolver,
    qname: dns.name.Name,
    rdtype: dns.rdatatype.RdataType,
    retries: int,
    deadline: float,
) -> _Outcome:
    """One query, retried on SERVFAIL and timeout, within the check's deadline."""
    outcome = _Outcome("timeout", attempts=0)
    for attempt in range(1, retries + 2):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        outcome = _query_once(resolver, qname, rdtype, min(resolver.lifetime, remaining))
        outcome = _Outcome(outcome.kind, outcome.rrset, outcome.reason, attempt)
        if outcome.kind not in _RETRIED:
            break
    return outcome


# ---------------------------------------------------------------------------------------------- the check


def _to_name(text: str) -> dns.name.Name:
    name = dns.name.from_text(text.strip(), origin=dns.name.root)
    if name == dns.name.root:
        raise ValueError("empty name")
    return dns.name.from_text(name.to_text().lower())


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def check_cname(
    name: str,
    expected_target: str,
    *,
    resolver: dns.resolver.Resolver | None = None,
    retries: int = 2,
) -> CnameCheck:
    """Check that `name` is a CNAME (chain) reaching `expected_target`; never raises for DNS outcomes."""
    if not isinstance(name, str) or not isinstance(expected_target, str):
        raise TypeError("name and expected_target must be strings")
    if retries < 0:
        raise ValueError("retries must be >= 0")
    try:
        expected_name = _to_name(expected_target)
    except (dns.exception.DNSException, ValueError) as error:
        raise ValueError(f"bad expected target {expected_target!r}: {error}") from None
    expected = _text(expected_name)
    checked_at = time.time()

    def result(status: CnameStatus, detail: str, chain: list[str]) -> CnameCheck:
        found = chain[1] if len(chain) > 1 else None
        return CnameCheck(chain[0], expected, status, found, chain, detail, checked_at)

    try:
        qname = _to_name(name)
    except (dns.exception.DNSException, ValueError) as error:
        reason = str(error).rstrip(".")
        detail = f"{name!r} is not a valid DNS name ({reason}), so it cannot be checked; correct the name."
        return result(CnameStatus.ERROR, detail, [name.strip().rstrip(".").lower()])
    shown = _text(qname)
    if resolver is None:
        resolver = make_resolver()
    if not resolver.nameservers:
        detail = (
            f"{shown} could not be checked because this server has no DNS resolver configured; "
            f"set {NAMESERVERS_ENV} or /etc/resolv.conf and check again."
        )
        return result(CnameStatus.ERROR, detail, [shown])

    deadline = time.monotonic() + resolver.lifetime * (retries + 2)
    names, ended, outcome = _follow(resolver, qname, expected_name, retries, deadline)
    chain = [_text(hop) for hop in names]
    if ended == "nodata" and len(chain) == 1:
        add = f"at your DNS provider, add a CNAME record for {shown} with the value {expected}"
        return _without_cname(resolver, qname, shown, expected, add, retries, deadline, result)
    if ended in _FAILURE_STATUS:
        return result(_FAILURE_STATUS[ended], _failure_detail(outcome, resolver, chain, expected), chain)
    verdict = _CHAIN_VERDICTS["no_name" if ended == "nxdomain" and len(chain) == 1 else ended]
    return result(*verdict(chain, expected), chain)


def _follow(
    resolver: dns.resolver.Resolver,
    qname: dns.name.Name,
    expected: dns.name.Name,
    retries: int,
    deadline: float,
) -> tuple[list[dns.name.Name], str, _Outcome]:
    """Follow the CNAMEs from `qname`: the names met (qname first), why the walk stopped (it reached
    `expected`, looped, grew too long, or the last lookup's outcome) and that lookup."""
    names = [qname]
    while True:
        outcome = _lookup(resolver, names[-1], dns.rdatatype.CNAME, retries, deadline)
        if outcome.kind != "answer":
            return names, outcome.kind, outcome
        assert outcome.rrset is not None
        target = _to_name(outcome.rrset[0].target.to_text())
        looped = target in names
        names.append(target)
        if target == expected:
            return names, "reached", outcome
        if looped:
            return names, "loop", outcome
        if len(names) > MAX_HOPS:
            return names, "too_long", outcome


def _reached(chain: list[str], expected: str) -> tuple[CnameStatus, str]:
    if len(chain) == 2:
        return (
            CnameStatus.VALID,
            f"{chain[0]} is a CNAME for {expected}, as expected; nothing needs to change.",
        )
    path = " -> ".join(chain)
    return CnameStatus.VALID, (
        f"{chain[0]} reaches {expected} through the CNAME chain {path}, as expected; nothing needs to change."
    )


def _looped(chain: list[str], expected: str) -> tuple[CnameStatus, str]:
    shown, path = chain[0], " -> ".join(chain)
    return CnameStatus.ERROR, (
        f"The CNAME records for {shown} form a loop ({path}) and never reach {expected}; "
        f"at your DNS provider, change the CNAME record for {shown} to the value {expected}."
    )


def _too_long(chain: list[str], expected: str) -> tuple[CnameStatus, str]:
    shown, path = chain[0], " -> ".join(chain)
    return CnameStatus.ERROR, (
        f"The CNAME chain from {shown} is longer than {MAX_HOPS} hops ({path}) without reaching "
        f"{expected}; at your DNS provider, change the CNAME record for {shown} to the value {expected}."
    )


def _dead_end(chain: list[str], expected: str, *, missing: bool) -> tuple[CnameStatus, str]:
    """The chain ends at a name with no CNAME (or one that does not exist) that is not the target."""
    shown, found = chain[0], chain[1]
    where = f"{shown} is a CNAME for {found}"
    if len(chain) > 2:
        where += f", and its chain {' -> '.join(chain)} ends at {chain[-1]}"
    if missing:
        where += ", which does not exist"
    return CnameStatus.WRONG_TARGET, (
        f"{where}, but it must point to {expected}; at your DNS provider, change the value of the "
        f"CNAME record for {shown} from {found} to {expected}."
    )


def _no_name(chain: list[str], expected: str) -> tuple[CnameStatus, str]:
    shown = chain[0]
    return CnameStatus.NXDOMAIN, (
        f"{shown} does not exist in DNS; at your DNS provider, add a CNAME record for {shown} with the "
        f"value {expected}."
    )


# How a walk that did not fail ended, and what the user is told (failures: _FAILURE_STATUS).
_CHAIN_VERDICTS: dict[str, Callable[[list[str], str], tuple[CnameStatus, str]]] = {
    "reached": _reached,
    "loop": _looped,
    "too_long": _too_long,
    "nxdomain": lambda chain, expected: _dead_end(chain, expected, missing=True),
    "nodata": lambda chain, expected: _dead_end(chain, expected, missing=False),
    "no_name": _no_name,
}


_FAILURE_STATUS = {
    "servfail": CnameStatus.SERVFAIL,
    "timeout": CnameStatus.TIMEOUT,
    "refused": CnameStatus.REFUSED,
    "error": CnameStatus.ERROR,
}


def _failure_detail(
    outcome: _Outcome, resolver: dns.resolver.Resolver, chain: list[str], expected: str
) -> str:
    shown, hop = chain[0], chain[-1]
    tries = (
        f"on {_plural(outcome.attempts, 'attempt')}"
        if outcome.attempts
        else "before the check ran out of time"
    )
    if len(chain) > 1:
        subject = f"{shown} is a CNAME for {chain[1]}, but looking up {hop}"
        consequence = f"so it is unknown whether it leads to {expected}"
    else:
        subject = f"Looking up {shown}"
        consequence = f"so it is unknown whether it is a CNAME for {expected}"
    if outcome.kind == "servfail":
        return (
            f"{subject} failed with SERVFAIL (server failure) {tries}, {consequence}; make sure the "
            f"domain's nameservers at your DNS provider are working (and its DNSSEC settings are correct), "
            "then check again."
        )
    if outcome.kind == "timeout":
        return (
            f"{subject} got no answer from DNS within {resolver.lifetime:g} s {tries}, {consequence}; "
            "make sure the domain's nameservers at your DNS provider are reachable, then check again."
        )
    if outcome.kind == "refused":
        return (
            f"{subject} was refused (REFUSED) by the DNS server, {consequence}; make sure the domain is "
            "delegated to nameservers at your DNS provider that serve it, then check again."
        )
    return f"{subject} failed: {outcome.reason}, {consequence}; check again later."


def _without_cname(
    resolver: dns.resolver.Resolver,
    qname: dns.name.Name,
    shown: str,
    expected: str,
    add: str,
    retries: int,
    deadline: float,
    result: Callable[[CnameStatus, str, list[str]], CnameCheck],
) -> CnameCheck:
    """The name exists without a CNAME: does it hold addresses (not_cname) or nothing useful (no_data)?"""
    found: list[str] = []
    for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        outcome = _lookup(resolver, qname, rdtype, retries, deadline)
        if outcome.kind == "answer" and outcome.rrset is not None:
            kind = dns.rdatatype.to_text(rdtype)
            found.extend(f"{kind} {rdata.to_text()}" for rdata in outcome.rrset)
    if found:
        shown_records = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
        detail = (
            f"{shown} has address records ({shown_records}) instead of a CNAME; at your DNS provider, "
            f"delete them and add a CNAME record for {shown} with the value {expected}."
        )
        return result(CnameStatus.NOT_CNAME, detail, [shown])
    detail = f"{shown} exists in DNS but has no CNAME record; {add}."
    return result(CnameStatus.NO_DATA, detail, [shown])


def check_many(
    checks: Iterable[tuple[str, str]],
    *,
    resolver: dns.resolver.Resolver | None = None,
    max_workers: int = 16,
    retries: int = 2,
) -> list[CnameCheck]:
    """`check_cname` for each (name, expected_target), concurrently on a bounded pool; results in order."""
    if max_workers < 1:
        raise ValueError("max_workers must be >= 1")
    pairs = [(name, expected) for name, expected in checks]
    if not pairs:
        return []
    if resolver is None:
        resolver = make_resolver()
    shared = resolver

    def one(pair: tuple[str, str]) -> CnameCheck:
        return check_cname(pair[0], pair[1], resolver=shared, retries=retries)

    with ThreadPoolExecutor(max_workers=min(max_workers, len(pairs)), thread_name_prefix="dns-check") as pool:
        return list(pool.map(one, pairs))


# ------------------------------------------------------------------------------------ TXT and MX records


@dataclass(frozen=True)
class RecordCheck:
    """One TXT or MX record of the sending identity, checked: Mailgun's `valid` and `cached` (what DNS
    holds at the name, for that type), and one sentence a user can act on."""

    name: str
    record_type: str
    expected: str
    valid: Literal["valid", "invalid", "unknown"]
    cached: list[str] = field(default_factory=list)
    detail: str = ""
    checked_at: float = field(default_factory=time.time)


def _spf_includes(found: str, expected: str) -> bool:
    """A TXT value satisfies an expected SPF record when it is SPF and has every include the expected has."""
    words = found.lower().split()
    wanted = [w for w in expected.lower().split() if w.startswith(("include:", "a:", "mx:", "ip4:", "ip6:"))]
    return bool(words) and words[0] == "v=spf1" and all(w in words for w in wanted)


def check_record(
    name: str,
    record_type: Literal["TXT", "MX"],
    expected: str,
    *,
    resolver: dns.resolver.Resolver | None = None,
    retries: int = 2,
) -> RecordCheck:
    """Whether `name` has the TXT (an SPF record with `expected`'s includes, or exactly `expected`) or the
    MX (`expected` as its exchange, any preference) the identity needs. Never raises for DNS outcomes."""
    resolver = resolver or make_resolver()
    try:
        qname = _to_name(name)
    except (dns.exception.DNSException, ValueError):
        return RecordCheck(name, record_type, expected, "invalid", [], f"{name!r} is not a valid DNS name.")
    shown = _text(qname)
    rdtype = dns.rdatatype.TXT if record_type == "TXT" else dns.rdatatype.MX
    deadline = time.monotonic() + resolver.lifetime * (retries + 2)
    outcome = (
        _lookup(resolver, qname, rdtype, retries, deadline) if resolver.nameservers else _Outcome("error")
    )
    add = f"at your DNS provider, add a {record_type} record for {shown} with the value {expected}"
    if outcome.kind in ("nxdomain", "nodata"):
        return RecordCheck(
            shown, record_type, expected, "invalid", [], f"{shown} has no {record_type} record; {add}."
        )
    if outcome.kind != "answer" or outcome.rrset is None:
        detail = _failure_detail(outcome, resolver, [shown], expected).replace(
            f"whether it is a CNAME for {expected}", f"whether it has the {record_type} record {expected}"
        )
        return RecordCheck(shown, record_type, expected, "unknown", [], detail)
    if record_type == "TXT":
        cached = [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in outcome.rrset]
        spf = expected.lower().startswith("v=spf1")
        ok = any(_spf_includes(found, expected) if spf else found == expected for found in cached)
    else:
        cached = [f"{rdata.preference} {_text(rdata.exchange)}" for rdata in outcome.rrset]
        ok = any(_text(rdata.exchange) == expected.split()[-1].rstrip(".").lower() for rdata in outcome.rrset)
    if ok:
        return RecordCheck(
            shown, record_type, expected, "valid", cached, f"{shown} has the {record_type} record."
        )
    shown_found = "; ".join(cached[:3])
    detail = f"{shown} has {record_type} records ({shown_found}) but not the one needed; {add}."
    if (
        record_type == "TXT"
        and expected.lower().startswith("v=spf1")
        and any(c.lower().startswith("v=spf1") for c in cached)
    ):
        needed = " ".join(expected.split()[1:-1])
        detail = (
            f"{shown} has an SPF record ({shown_found}) without {needed}; add that to it (a name may have"
            " only one SPF record)."
        )
    return RecordCheck(shown, record_type, expected, "invalid", cached, detail)
