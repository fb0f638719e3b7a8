"""The local stack: moto in server mode with the template's resources, an HTTP server that behaves like
API Gateway's HTTP API in front of the in-process handlers, and the template's other triggers.

    python -m devstack.server        (what `make run` starts)

Environment: PORT (3000), AWS_PORT (5000), HOST (127.0.0.1), TLS (0/1), API_KEY,
OPENTRACKING_NAMESERVERS, DNS_PORT, TRACKING_CNAME_TARGET, LOCAL_SCHEDULE_SECONDS (run every schedule at
this interval instead of its rate). It prints one line containing `ready` when it
listens.

DNS: unless OPENTRACKING_NAMESERVERS names real resolvers, the stack runs its own DNS server on loopback
(DNS_PORT, default a free port) that plays the customer's DNS provider. It starts empty, so a new domain's
tracking CNAME is missing, exactly as on a real first day; publish it with
`PUT /_local/dns/<name>` (body `{"type": "CNAME", "value": "<target>"}`), then verify the domain.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import boto3
from dns.exception import DNSException

from devstack import tls
from devstack.aws_process import SWITCH_INTERVAL
from devstack.dns_server import DnsServer
from devstack.events import make_http_event
from devstack.provision import provision
from devstack.routes import Route, find_route, http_routes
from devstack.runtime import Function, apply_environment, functions
from devstack.smtp_server import MailSink
from devstack.template import ROOT, Stack
from devstack.triggers import Triggers

STATE_DIR = ROOT / ".local"
STATE_FILE = STATE_DIR / "stack.json"
DEFAULT_API_KEY = "key-opentracking-local"
DEFAULT_CNAME_TARGET = "track.opentracking.localhost"
_NOT_FOUND = {"message": "Not Found"}
# Ctrl-C or SIGTERM: every listener closes at once, running triggers get this long to finish their batch.
STOP_SECONDS = 3.0


def start_aws(port: int, timeout: float = 60.0) -> subprocess.Popen:
    """moto on 127.0.0.1:`port` in a process of its own (devstack.aws_process), once it listens."""
    from devstack.process import python_environment  # process.py imports this module

    process = subprocess.Popen(  # noqa: S603 - this interpreter, our module, a port number
        [sys.executable, "-m", "devstack.aws_process", str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=python_environment(),
    )
    assert process.stdout is not None
    ready = threading.Event()
    threading.Thread(target=lambda: process.stdout.readline() and ready.set(), daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.1):  # a process that died (a port in use) fails now, not at the deadline
        if process.poll() is not None or time.monotonic() > deadline:
            stop_aws(process)
            raise RuntimeError(f"moto did not start on 127.0.0.1:{port} (exit code {process.poll()})")
    return process


def stop_aws(process: subprocess.Popen, timeout: float = 2.0) -> None:
    """End of file on its input stops it; SIGKILL if it has not gone within `timeout`."""
    if process.stdin:
        process.stdin.close()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def log(message: str) -> None:
    print(f"[opentracking] {message}", file=sys.stderr, flush=True)


@dataclass
class Config:
    host: str = "127.0.0.1"
    port: int = 3000
    aws_port: int = 5000
    tls: bool = False
    api_key: str = DEFAULT_API_KEY
    nameservers: str = ""
    dns_port: int = 0
    cname_target: str = DEFAULT_CNAME_TARGET
    schedule_seconds: float | None = None
    state_file: Path = STATE_FILE
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> Config:
        return cls(
            host=os.environ.get("HOST", "127.0.0.1"),
            port=int(os.environ.get("PORT", "3000")),
            aws_port=int(os.environ.get("AWS_PORT", "5000")),
            tls=os.environ.get("TLS", "0").lower() in ("1", "true", "yes"),
            api_key=os.environ.get("API_KEY") or DEFAULT_API_KEY,
            nameservers=os.environ.get("OPENTRACKING_NAMESERVERS", ""),
            dns_port=int(os.environ.get("DNS_PORT", "0")),
            cname_target=os.environ.get("TRACKING_CNAME_TARGET") or DEFAULT_CNAME_TARGET,
            schedule_seconds=float(os.environ["LOCAL_SCHEDULE_SECONDS"])
            if os.environ.get("LOCAL_SCHEDULE_SECONDS")
            else None,
            state_file=Path(os.environ.get("OPENTRACKING_STATE_FILE", str(STATE_FILE))),
        )

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def aws_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.aws_port}"


def aws_environment(config: Config) -> dict[str, str]:
    """What every boto3 client in this process (ours, Powertools', moto's) needs to reach moto."""
    return {
        "AWS_ENDPOINT_URL": config.aws_endpoint,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }


class LocalStack:
    def __init__(self, config: Config, stack: Stack | None = None):
        self.config = config
        self.stack = stack or Stack()
        self.functions: dict[str, Function] = {}
        self.routes: list[Route] = []
        self.triggers: Triggers | None = None
        self._moto: subprocess.Popen | None = None
        self._http: ThreadingHTTPServer | None = None
        self.dns: DnsServer | None = None
        self.mail: MailSink | None = (
            None  # the local "internet" delivery reaches, unless SMTP_RELAY names one
        )
        self.tls_pin: str | None = None  # the local CA's SPKI pin under TLS=1
        self._requests_in_flight = 0  # API requests being answered (queue consumers wait for them)
        self._in_flight_lock = threading.Lock()

    def start(self) -> None:
        os.environ.update(aws_environment(self.config))
        self._moto = start_aws(self.config.aws_port)
        if not self.config.nameservers:
            self.dns = DnsServer(port=self.config.dns_port).start()
        if not os.environ.get("SMTP_RELAY", "").strip():
            self.mail = MailSink(folder=self.mail_folder).start()
        provision(self.stack)
        self._set_api_key()
        env = apply_environment(self.stack, self._environment_overrides())
        self.functions = functions(self.stack)
        self.routes = http_routes(self.stack)
        self.triggers = Triggers(
            self.stack,
            self.functions,
            log,
            schedule_seconds=self.config.schedule_seconds,
            api_busy=lambda: self._requests_in_flight > 0,
        )
        self.triggers.start()
        self._http = ThreadingHTTPServer((self.config.host, self.config.port), self._handler_class())
        self._http.daemon_threads = True
        if self.config.tls:
            certificates = tls.LocalCertificates(self.config.state_file.parent / "tls")
            self._http.socket = certificates.server_context().wrap_socket(self._http.socket, server_side=True)
            self.tls_pin = certificates.spki_pin()
        self._write_state(env)

    def _set_api_key(self) -> None:
        """The deployed stack generates its account key; locally it is API_KEY (or the default)."""
        if "ApiKeysSecret" in self.stack.refs:
            boto3.client("secretsmanager").put_secret_value(
                SecretId=self.stack.ref("ApiKeysSecret"),
                SecretString=json.dumps({"account": self.config.api_key}),
            )

    @property
    def mail_folder(self) -> Path:
        """Where the local SMTP server keeps what it received: one .eml per recipient's transaction."""
        return self.config.state_file.parent / "mail"

    @property
    def smtp_relay(self) -> str:
        return os.environ.get("SMTP_RELAY", "").strip() or (self.mail.address if self.mail else "")

    @property
    def nameservers(self) -> str:
        return self.config.nameservers or (self.dns.nameserver if self.dns else "")

    def _environment_overrides(self) -> dict[str, str]:
        overrides = {
            "OPENTRACKING_NAMESERVERS": self.nameservers,
            "TRACKING_CNAME_TARGET": self.config.cname_target,
            # The local stack serves every tracking host itself (TLS=1: its own CA), so by default all of
            # them CNAME to one target. TRACKING_HOSTS=CustomDomains runs the ACM/API Gateway flow on moto.
            "TRACKING_HOSTS": os.environ.get("TRACKING_HOSTS", "SharedTarget"),
            # Locally, webhook receivers usually run on this machine; on AWS private addresses are refused.
            "WEBHOOK_ALLOW_PRIVATE_URLS": os.environ.get("WEBHOOK_ALLOW_PRIVATE_URLS", "1"),
            # Pixel links in locally stored copies use the scheme this server speaks.
            "TRACKING_SCHEME": self.config.scheme,
            # Delivery: to the relay in SMTP_RELAY, or with DELIVERY_TRANSPORT=smtp to the local SMTP server;
            # one transaction per recipient. Off by default for now: with it on, a 1,000-recipient send
            # keeps the local stack busy long enough to slow the next submission several times (issue 16).
            "DELIVERY_TRANSPORT": os.environ.get(
                "DELIVERY_TRANSPORT", "smtp" if os.environ.get("SMTP_RELAY", "").strip() else "none"
            ),
            "SMTP_RELAY": self.smtp_relay,
            "SMTP_SECURITY": os.environ.get("SMTP_SECURITY", "none"),
            # The relay's SPF include, listed and checked on each domain (the template's SmtpSpfInclude).
            "SMTP_SPF_INCLUDE": os.environ.get("SMTP_SPF_INCLUDE", ""),
            "SMTP_CREDENTIALS_SECRET": "",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_NAMESPACE": "OpenTracking",
            **self.config.extra_env,
        }
        return overrides

    def _write_state(self, env: dict[str, str]) -> None:
        """What `make invoke` and the demo need to reach this stack."""
        self.config.state_file.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "api_url": f"{self.config.scheme}://{self.config.host}:{self.config.port}",
            "aws_endpoint": self.config.aws_endpoint,
            "nameservers": self.nameservers,
            "cname_target": self.config.cname_target,
            "tls_ca_pin": self.tls_pin,
            "smtp_relay": self.smtp_relay,
            "mail_folder": str(self.mail_folder) if self.mail else None,
            "environment": {**env, **aws_environment(self.config)},
            "resources": self.stack.refs,
        }
        self.config.state_file.write_text(json.dumps(state, indent=2))

    @property
    def url(self) -> str:
        return f"{self.config.scheme}://{self.config.host}:{self.config.port}"

    def serve_forever(self) -> None:
        assert self._http is not None
        self._http.serve_forever(poll_interval=0.2)

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Close every listener first (the API, moto, the DNS server), so nothing answers once this returns;
        then give the triggers what is left of `timeout` to finish the batch they are in."""
        deadline = time.monotonic() + timeout
        if self._http:
            self._http.shutdown()
            self._http.server_close()
        if self.triggers:
            self.triggers.stop(deadline=time.monotonic())  # tell them first; waited for below
        if self._moto:
            stop_aws(self._moto)
        if self.dns:
            self.dns.stop()
        if self.mail:
            self.mail.stop()
        if self.triggers:
            self.triggers.stop(deadline=deadline)

    def dispatch(
        self,
        method: str,
        raw_path: str,
        query: str,
        headers: list[tuple[str, str]],
        body: bytes,
        source_ip: str,
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """One HTTP request through the route table and a handler, like API Gateway (payload 2.0)."""
        if raw_path.startswith("/_local/"):
            return self._admin(method, raw_path, body)
        found = find_route(self.routes, method, raw_path)
        if found is None:
            return 404, [("Content-Type", "application/json")], json.dumps(_NOT_FOUND).encode()
        route, params = found
        event = make_http_event(
            method,
            raw_path,
            route_key=route.route_key,
            path_parameters=params or None,
            query=query,
            headers=headers,
            body=body if body or method in ("POST", "PUT", "PATCH") else None,
            source_ip=source_ip,
            scheme=self.config.scheme,
            api_id=self.stack.refs.get("HttpApi", "local"),
        )
        try:
            result = self.functions[route.function].invoke(event)
        except Exception as exc:  # what API Gateway answers when the function itself fails
            log(f"{route.function} failed: {type(exc).__name__}: {exc}")
            return 500, [("Content-Type", "application/json")], b'{"message":"Internal Server Error"}'
        return http_response(result)

    def _admin(self, method: str, path: str, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """Local-only controls (never part of the template's API):

        POST /_local/schedules/{FunctionLogicalId}   run a scheduled function now
        PUT /_local/dns/{name}  {"type": "CNAME", "value": "..."}   publish a record in the local DNS
        DELETE /_local/dns/{name}                     remove a name's records from the local DNS
        """
        parts = path.strip("/").split("/")

        def answer(status: int, document: object) -> tuple[int, list[tuple[str, str]], bytes]:
            return status, [("Content-Type", "application/json")], json.dumps(document, default=str).encode()

        if method == "POST" and len(parts) == 3 and parts[1] == "schedules" and self.triggers:
            schedule = self.triggers.schedules.get(parts[2])
            if schedule:
                return answer(200, schedule.fire())
        if len(parts) == 3 and parts[1] == "dns":
            if self.dns is None:
                return answer(
                    409, {"message": "OPENTRACKING_NAMESERVERS is set: the local DNS is not running"}
                )
            name = parts[2]
            if method == "PUT":
                try:
                    record = json.loads(body or b"{}")
                    kind = str(record["type"]).upper()
                    # A TXT or MX record joins the name's others (SPF beside an MX); anything else replaces
                    # them (a CNAME stands alone).
                    self.dns.remove(name, kind) if kind in ("TXT", "MX") else self.dns.remove(name)
                    self.dns.set_record(name, kind, str(record["value"]))
                except (ValueError, KeyError, TypeError, DNSException) as exc:
                    return answer(400, {"message": f"expected {{'type': ..., 'value': ...}}: {exc}"})
                return answer(200, {"message": f"{name} {record['type']} {record['value']} published"})
            if method == "DELETE":
                self.dns.remove(name)
                return answer(200, {"message": f"{name} removed"})
        return answer(404, _NOT_FOUND)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        stack = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes; on a kept-alive connection Nagle's algorithm held the
            # body until the client acknowledged the headers, which it delays by 40 ms: every request on
            # a reused connection (a mail client's, an SDK's) took at least 40 ms.
            disable_nagle_algorithm = True
            server_version = "opentracking-local"

            def _serve(self) -> None:
                split = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with stack._in_flight_lock:
                    stack._requests_in_flight += 1
                try:
                    status, headers, payload = stack.dispatch(
                        self.command,
                        split.path,
                        split.query,
                        list(self.headers.items()),
                        body,
                        self.client_address[0],
                    )
                finally:
                    with stack._in_flight_lock:
                        stack._requests_in_flight -= 1
                self.send_response(status)
                names = {name.lower() for name, _ in headers}
                for name, value in headers:
                    if name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                if "connection" not in names:
                    self.send_header("Connection", "keep-alive")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

            def log_message(self, format: str, *args: object) -> None:
                path = loggable_path(stack.routes, self.command, urlsplit(self.path).path)
                log(f"{self.command} {path} -> {args[1] if len(args) > 1 else ''}")

        return Handler


# Path parameters that are credentials: a pixel or click token lets anyone record an open or a click.
SECRET_PARAMETERS = frozenset({"token"})


def loggable_path(routes: list[Route], method: str, path: str) -> str:
    """The request path as the request log may show it: no query string (nothing an API client put in a URL),
    and each secret parameter of the matched route as its name (`/o/{token}`). A path no route matches
    keeps its first segment only: a mangled pixel link (`/o/<token>/x`) must not leak either."""
    found = find_route(routes, method, path) or find_route(routes, "GET", path)
    if found is None:
        first, _, rest = path.lstrip("/").partition("/")
        return f"/{first}/..." if rest else f"/{first}"
    route, params = found
    if not SECRET_PARAMETERS & params.keys():
        return path
    shown = route.path
    for name, value in params.items():
        if name not in SECRET_PARAMETERS:
            shown = shown.replace(f"{{{name}}}", value).replace(f"{{{name}+}}", value)
    return shown


def http_response(result: object) -> tuple[int, list[tuple[str, str]], bytes]:
    """An HTTP API payload 2.0 response -> status, headers, body. A plain value becomes a 200 JSON body,
    as API Gateway does when the handler returns no statusCode."""
    if not isinstance(result, dict) or "statusCode" not in result:
        return 200, [("Content-Type", "application/json")], json.dumps(result).encode()
    headers = [(str(k), str(v)) for k, v in (result.get("headers") or {}).items()]
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers.extend((name, str(v)) for v in values)
    headers.extend(("Set-Cookie", cookie) for cookie in result.get("cookies") or [])
    body = result.get("body") or ""
    payload = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode("utf-8")
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("Content-Type", "application/json"))
    return int(result["statusCode"]), headers, payload


def main() -> None:
    config = Config.from_env()
    sys.setswitchinterval(SWITCH_INTERVAL)
    stack = LocalStack(config)
    stack.start()
    stopping = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    threading.Thread(target=stack.serve_forever, name="api", daemon=True).start()
    print(
        f"opentracking local stack ready on {stack.url} (AWS on {config.aws_endpoint}, API key "
        f"'{config.api_key}' unless API_KEY is set; Ctrl-C stops)",
        flush=True,
    )
    if stack.mail:
        log(
            f"mail is delivered to the local SMTP server on {stack.mail.address}, kept in {stack.mail_folder}"
        )
    else:
        log(f"mail is delivered to the SMTP relay {stack.smtp_relay}")
    while not stopping.wait(0.2):
        pass
    started = time.monotonic()
    stack.stop()
    log(f"stopped in {time.monotonic() - started:.1f} s")
    # Every listener is closed and every state file written; all AWS state was moto's, in memory. What may
    # still run is a trigger's abandoned batch, and the interpreter's exit would wait for the thread pools it
    # uses: end now instead, so Ctrl-C takes seconds, not as long as a batch.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
