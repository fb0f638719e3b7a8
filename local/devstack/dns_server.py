"""A small authoritative DNS server for tests and the local stack, built on dnspython.

It listens on UDP and TCP on the same port (127.0.0.1, port 0 picks a free one), answers from records it
is given, and can be told to misbehave per name. Everything runs in background threads with short socket
timeouts, so `stop()` returns within a fraction of a second.

    records = {"email.example.com.": ("CNAME", "track.opentracking.test.")}
    with DnsServer(records) as server:
        resolver = make_resolver([("127.0.0.1", server.port)])
        server.set_fault("email.example.com", "servfail")
        server.set_records({"email.example.com": ("CNAME", "track.opentracking.test")})  # fix it
        server.query_count("email.example.com")

Records are a mapping of owner name to one `(type, rdata)` tuple or a list of them; names are always
absolute (a missing trailing dot is added) and compared case-insensitively. Zone text (master-file
format) can be loaded too. Faults: `servfail`, `refused`, `timeout` (the query is dropped, never
answered) and `truncate` (UDP answers have TC set and no records, so clients retry over TCP).

The answers follow what an authoritative server does: a CNAME query returns the CNAME itself; any other
type at a name holding a CNAME returns the CNAME followed, within this server's data, to the records of
the asked type; a name that owns no records (and has no descendants) is NXDOMAIN; otherwise NOERROR with
an empty answer (NODATA). Every answer has AA set.

As a program (for the local stack; set OPENTRACKING_NAMESERVERS to the printed address):

    python -m devstack.dns_server [--port 5353] [--zone FILE --origin example.com] [--records FILE.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone

Fault = Literal["servfail", "refused", "timeout", "truncate"]
FAULTS: frozenset[str] = frozenset({"servfail", "refused", "timeout", "truncate"})
RecordValue = tuple[str, str] | Sequence[tuple[str, str]]

_POLL = 0.05  # seconds every blocking socket call waits at most before checking for stop
_TCP_IDLE = 5.0  # a TCP client idle for this long is disconnected
_MAX_TCP_CONNECTIONS = 64
_MAX_CHASE = 8
_UDP_MAX = 512


def _name(text: str | dns.name.Name) -> dns.name.Name:
    """An absolute, lower-case name, so that stored owners print the way the tests wrote them."""
    name = text if isinstance(text, dns.name.Name) else dns.name.from_text(text.strip(), origin=dns.name.root)
    return dns.name.from_text(name.to_text().lower())


def _key(name: str | dns.name.Name) -> str:
    """A name as the query log records it: lower case, no trailing dot."""
    return _name(name).to_text(omit_final_dot=True)


def _rdata(rdtype: dns.rdatatype.RdataType, text: str) -> dns.rdata.Rdata:
    """Rdata from text; names inside it are absolute (a missing trailing dot is added)."""
    return dns.rdata.from_text(dns.rdataclass.IN, rdtype, text, origin=dns.name.root, relativize=False)


@dataclass(frozen=True)
class Query:
    """One query the server received."""

    name: str  # lower case, no trailing dot
    rdtype: str  # e.g. "CNAME"
    transport: Literal["udp", "tcp"]
    at: float


class DnsServer:
    """An authoritative DNS server on loopback; see the module docstring."""

    def __init__(
        self,
        records: Mapping[str, RecordValue] | None = None,
        *,
        zone_text: str | None = None,
        origin: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ttl: int = 60,
    ) -> None:
        self.host = host
        self.ttl = ttl
        self._requested_port = port
        self._port: int | None = None
        self._lock = threading.Lock()
        self._data: dict[tuple[dns.name.Name, dns.rdatatype.RdataType], dns.rrset.RRset] = {}
        self._faults: dict[dns.name.Name, str] = {}
        self._queries: list[Query] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._connections: set[threading.Thread] = set()
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        if records:
            self.set_records(records)
        if zone_text is not None:
            self.load_zone_text(zone_text, origin=origin)

    # ---------------------------------------------------------------- lifecycle

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the DNS server is not running")
        return self._port

    @property
    def nameserver(self) -> str:
        """`host:port`, the format of OPENTRACKING_NAMESERVERS."""
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._port is not None and not self._stop.is_set()

    def start(self) -> DnsServer:
        if self._port is not None:
            raise RuntimeError("the DNS server is already running")
        self._stop.clear()
        self._udp, self._tcp = self._bind()
        self._port = self._udp.getsockname()[1]
        for target, label in ((self._serve_udp, "udp"), (self._serve_tcp, "tcp")):
            thread = threading.Thread(target=target, name=f"dns-server-{label}-{self._port}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop serving and close the sockets; returns within about `timeout` seconds."""
        if self._port is None:
            return
        self._stop.set()
        deadline = time.monotonic() + timeout
        with self._lock:
            workers = [*self._threads, *self._connections]
        for thread in workers:
            thread.join(max(0.0, deadline - time.monotonic()))
        for sock in (self._udp, self._tcp):
            if sock is not None:
                sock.close()
        self._udp = self._tcp = None
        self._threads.clear()
        self._port = None

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _bind(self) -> tuple[socket.socket, socket.socket]:
        """A UDP and a TCP socket on the same port; with port 0, retry until both get the same free port."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        attempts = 1 if self._requested_port else 20
        last_error: OSError | None = None
        for _ in range(attempts):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            tcp = socket.socket(family, socket.SOCK_STREAM)
            try:
                udp.bind((self.host, self._requested_port))
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind((self.host, udp.getsockname()[1]))
                tcp.listen(16)
            except OSError as error:
                udp.close()
                tcp.close()
                last_error = error
                continue
            udp.settimeout(_POLL)
            tcp.settimeout(_POLL)
            return udp, tcp
        assert last_error is not None
        raise last_error

    # ---------------------------------------------------------------- data (thread-safe)

    def set_records(self, records: Mapping[str, RecordValue]) -> None:
        """Replace the records at each named owner (all types) with the given ones."""
        parsed: dict[dns.name.Name, list[dns.rrset.RRset]] = {}
        for owner, value in records.items():
            name = _name(owner)
            items = (
                [value]
                if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str)
                else value
            )
            by_type: dict[dns.rdatatype.RdataType, dns.rrset.RRset] = {}
            for rdtype_text, rdata_text in items:  # type: ignore[misc]
                rdtype = dns.rdatatype.from_text(rdtype_text)
                rdata = _rdata(rdtype, rdata_text)
                rrset = by_type.setdefault(rdtype, dns.rrset.RRset(name, dns.rdataclass.IN, rdtype))
                rrset.add(rdata, self.ttl)
            parsed[name] = list(by_type.values())
        with self._lock:
            for name, rrsets in parsed.items():
                self._remove_locked(name, None)
                for rrset in rrsets:
                    self._data[(name, rrset.rdtype)] = rrset

    def set_record(self, name: str, rdtype: str, *values: str) -> None:
        """Replace one RRset (`values` empty removes it)."""
        owner = _name(name)
        kind = dns.rdatatype.from_text(rdtype)
        rrset = dns.rrset.RRset(owner, dns.rdataclass.IN, kind)
        for value in values:
            rrset.add(_rdata(kind, value), self.ttl)
        with self._lock:
            self._remove_locked(owner, kind)
            if values:
                self._data[(owner, kind)] = rrset

    def remove(self, name: str, rdtype: str | None = None) -> None:
        """Remove the records of one type at `name`, or all of them."""
        kind = dns.rdatatype.from_text(rdtype) if rdtype else None
        with self._lock:
            self._remove_locked(_name(name), kind)

    def load_zone_text(self, text: str, *, origin: str | None = None) -> None:
        """Add every RRset of a master-file zone (no SOA or NS required)."""
        zone = dns.zone.from_text(
            text,
            origin=_name(origin) if origin else None,
            relativize=False,
            check_origin=False,
        )
        rrsets = []
        for owner, rdataset in zone.iterate_rdatasets():
            rrset = dns.rrset.RRset(_name(owner), rdataset.rdclass, rdataset.rdtype)
            rrset.update(rdataset)
            rrsets.append(rrset)
        with self._lock:
            for rrset in rrsets:
                self._data[(rrset.name, rrset.rdtype)] = rrset

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._faults.clear()

    def set_fault(self, name: str, fault: Fault | None) -> None:
        """Misbehave for queries of `name` (any type): servfail, refused, timeout, truncate; None heals."""
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; use one of {sorted(FAULTS)}")
        owner = _name(name)
        with self._lock:
            if fault is None:
                self._faults.pop(owner, None)
            else:
                self._faults[owner] = fault

    def _remove_locked(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType | None) -> None:
        for key in [k for k in self._data if k[0] == name and (rdtype is None or k[1] == rdtype)]:
            del self._data[key]

    # ---------------------------------------------------------------- query log

    @property
    def queries(self) -> list[Query]:
        with self._lock:
            return list(self._queries)

    def query_count(self, name: str, rdtype: str | None = None) -> int:
        key = _key(name)
        kind = rdtype.upper() if rdtype else None
        return sum(1 for q in self.queries if q.name == key and (kind is None or q.rdtype == kind))

    def query_counts(self) -> Counter[str]:
        return Counter(q.name for q in self.queries)

    def reset_queries(self) -> None:
        with self._lock:
            self._queries.clear()

    # ---------------------------------------------------------------- answering

    def handle(self, wire: bytes, transport: Literal["udp", "tcp"]) -> bytes | None:
        """The wire answer to one query, or None for silence; a bug answers SERVFAIL, never ends a loop."""
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None  # not even a header we can answer to
        try:
            return self._handle(query, transport)
        except Exception:
            traceback.print_exc(file=sys.stderr)
            response = dns.message.make_response(query)
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()

    def _handle(self, query: dns.message.Message, transport: Literal["udp", "tcp"]) -> bytes | None:
        if query.flags & dns.flags.QR:
            return None  # a response; never answer those
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        response.flags &= ~dns.flags.RA
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return response.to_wire()
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        qname = _name(question.name)
        with self._lock:
            self._queries.append(
                Query(_key(qname), dns.rdatatype.to_text(question.rdtype), transport, time.time())
            )
            fault = self._faults.get(qname)
            if fault in (None, "truncate"):
                self._answer_locked(response, qname, question.rdtype)
        if fault == "timeout":
            return None
        if fault == "servfail":
            response.set_rcode(dns.rcode.SERVFAIL)
        elif fault == "refused":
            response.set_rcode(dns.rcode.REFUSED)
        elif fault == "truncate" and transport == "udp":
            return self._truncated(response)
        max_size = 65535
        if transport == "udp":
            max_size = max(_UDP_MAX, query.payload if query.edns >= 0 else _UDP_MAX)
        try:
            return response.to_wire(max_size=max_size)
        except dns.exception.TooBig:
            return self._truncated(response)

    @staticmethod
    def _truncated(response: dns.message.Message) -> bytes:
        response.answer.clear()
        response.authority.clear()
        response.additional.clear()
        response.flags |= dns.flags.TC
        return response.to_wire()

    def _answer_locked(
        self, response: dns.message.Message, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> None:
        if response.question[0].rdclass != dns.rdataclass.IN:
            response.set_rcode(dns.rcode.REFUSED)
            return
        current = qname
        seen: set[dns.name.Name] = set()
        for _ in range(_MAX_CHASE + 1):
            exact = self._data.get((current, rdtype))
            if exact is not None:
                response.answer.append(exact)
                return
            cname = self._data.get((current, dns.rdatatype.CNAME))
            if cname is None or rdtype == dns.rdatatype.ANY:
                break
            response.answer.append(cname)
            seen.add(current)
            current = _name(cname[0].target)
            if current in seen:
                return  # a loop: hand back what we have, as real servers do
        if current == qname and not self._exists_locked(qname):
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif rdtype == dns.rdatatype.ANY:
            response.answer.extend(rrset for (name, _), rrset in self._data.items() if name == current)

    def _exists_locked(self, name: dns.name.Name) -> bool:
        return any(owner == name or owner.is_subdomain(name) for owner, _ in self._data)

    # ---------------------------------------------------------------- sockets

    def _serve_udp(self) -> None:
        sock = self._udp
        assert sock is not None
        while not self._stop.is_set():
            try:
                wire, peer = sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue  # e.g. ICMP port unreachable from an earlier reply; keep serving
            answer = self.handle(wire, "udp")
            if answer is not None:
                with contextlib.suppress(OSError):
                    sock.sendto(answer, peer)

    def _serve_tcp(self) -> None:
        sock = self._tcp
        assert sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            with self._lock:
                self._connections = {t for t in self._connections if t.is_alive()}
                if len(self._connections) >= _MAX_TCP_CONNECTIONS:
                    conn.close()
                    continue
                thread = threading.Thread(target=self._serve_connection, args=(conn,), daemon=True)
                self._connections.add(thread)
            thread.start()

    def _serve_connection(self, conn: socket.socket) -> None:
        conn.settimeout(_POLL)
        idle_since = time.monotonic()
        buffer = b""
        with conn:
            while not self._stop.is_set() and time.monotonic() - idle_since < _TCP_IDLE:
                try:
                    chunk = conn.recv(65535)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                idle_since = time.monotonic()
                buffer += chunk
                while len(buffer) >= 2 and len(buffer) >= 2 + int.from_bytes(buffer[:2], "big"):
                    size = int.from_bytes(buffer[:2], "big")
                    wire, buffer = buffer[2 : 2 + size], buffer[2 + size :]
                    answer = self.handle(wire, "tcp")
                    if answer is not None:
                        try:
                            conn.sendall(len(answer).to_bytes(2, "big") + answer)
                        except OSError:
                            return


def _load_records(path: str) -> dict[str, list[tuple[str, str]]]:
    """JSON: {"email.example.com.": ["CNAME", "track.opentracking.test."] or [[type, rdata], ...]}."""
    with open(path, encoding="utf-8") as handle:
        raw = json.load(handle)
    records: dict[str, list[tuple[str, str]]] = {}
    for owner, value in raw.items():
        items: Iterable = [value] if value and isinstance(value[0], str) else value
        records[owner] = [(str(t), str(r)) for t, r in items]
    return records


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.dns_server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--zone", help="a master-file zone to serve")
    parser.add_argument("--origin", help="the zone's origin when the file has no $ORIGIN")
    parser.add_argument("--records", help="a JSON file of records")
    args = parser.parse_args(argv)
    server = DnsServer(host=args.host, port=args.port)
    if args.zone:
        with open(args.zone, encoding="utf-8") as handle:
            server.load_zone_text(handle.read(), origin=args.origin)
    if args.records:
        server.set_records(_load_records(args.records))
    with server:
        print(f"[dns] ready on {server.nameserver}", file=sys.stderr, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
