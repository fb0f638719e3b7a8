"""AWS at the botocore layer: every API call counted, every HTTP request answered in-process.

Two patches, installed once and shared by every client (including clients created before the stub):

- `botocore.client.BaseClient._make_api_call` counts (service, operation) and remembers the operation for
  the thread that is about to send it;
- `botocore.endpoint.Endpoint._send` (the step right after the `before-send` event, where botocore hands
  the signed request to urllib3) answers with a canned HTTP 200 when a stub is active, so requests are
  serialised, signed, checksummed and parsed exactly as on AWS, with no network and no moto cost.

With no stub active, or with `AwsStub(answer=False)`, requests go out as usual (the read side counts its
requests against moto server this way).

This module imports no botocore at the top, so a cold-start child can install it before anything else
and pay for botocore only when the code under test imports it (`install_when_imported`).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

BENCH_DOMAIN = "example.com"
ACCOUNT_KEY = "key-opentracking-bench"
# A fixed, public key for the bench only; at least 32 bytes, as tokens.KeyRing requires.
TOKEN_MASTER_KEY = "bench-master-key-0123456789abcdef0123456789abcdef"  # noqa: S105
TOKEN_SECRET = json.dumps({"active": "1", "1": TOKEN_MASTER_KEY})
API_KEYS_SECRET = json.dumps({"account": ACCOUNT_KEY})

# The bench domain as DynamoDB returns it: open tracking on, tracking CNAME verified.
DOMAIN_ITEM = {
    "pk": {"S": f"DOMAIN#{BENCH_DOMAIN}"},
    "sk": {"S": "DOMAIN"},
    "type": {"S": "domain"},
    "name": {"S": BENCH_DOMAIN},
    "cname_target": {"S": "track.opentracking.test"},
    "web_prefix": {"S": "email"},
    "created_at": {"S": "1764158400.0"},
    "open_tracking": {"BOOL": True},
    "place_at_the_top": {"BOOL": False},
    "cname_valid": {"S": "valid"},
    "tracking_ready": {"BOOL": True},
    "cname_status": {"S": "valid"},
}

# Operations that only read (the pixel's hot path must make none).
READ_OPERATIONS = frozenset(
    {"GetItem", "BatchGetItem", "Query", "Scan", "GetSecretValue", "GetObject", "HeadObject", "ListObjectsV2"}
)

_JSON_TYPES = {"dynamodb": "application/x-amz-json-1.0", "secretsmanager": "application/x-amz-json-1.1"}


class _Body:
    """What urllib3 hands botocore as a response body: something with stream()."""

    def __init__(self, data: bytes):
        self._data = data

    def stream(self, **_kwargs):
        yield self._data

    def read(self, amt: int | None = None) -> bytes:
        """A streamed body (S3 GetObject) is read, not streamed."""
        size = len(self._data) if amt is None else amt
        data, self._data = self._data[:size], self._data[size:]
        return data


class AwsStub:
    """Counts API calls and HTTP requests; answers them in-process unless `answer` is False."""

    def __init__(
        self,
        *,
        answer: bool = True,
        secrets: dict[str, str] | None = None,
        domain_items: dict[str, dict] | None = None,
        record: frozenset[str] = frozenset(),
        items: dict[str, dict] | None = None,
        objects: dict[str, bytes] | None = None,
        faults: dict[tuple[str, str], str] | None = None,
    ):
        self.answer = answer
        # (service, operation) -> "error" (DynamoDB's 500 InternalServerError) or "hang" (no answer: the
        # client's read timeout passes, then botocore's ReadTimeoutError), below botocore's retries.
        self.faults = dict(faults or {})
        # Items GetItem and UpdateItem (ReturnValues) answer with, by partition key, in DynamoDB's JSON;
        # and S3 objects GetObject answers with, by key (the sender reads a copy, then claims it).
        self.items = dict(items or {})
        self.objects = dict(objects or {})
        self.record = record  # operations whose parameters are kept in `recorded`
        self.recorded: list[tuple[str, str, dict]] = []
        self.calls: Counter[tuple[str, str]] = Counter()
        self.sends = 0
        self.secrets = dict(secrets or {})
        self.domain_items = dict(domain_items if domain_items is not None else {BENCH_DOMAIN: DOMAIN_ITEM})
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, environ, **kwargs) -> AwsStub:
        """A stub whose secrets are the ones the function's environment names."""
        secrets = {}
        if environ.get("TOKEN_SECRET_NAME"):
            secrets[environ["TOKEN_SECRET_NAME"]] = TOKEN_SECRET
        if environ.get("API_KEYS_SECRET_NAME"):
            secrets[environ["API_KEYS_SECRET_NAME"]] = API_KEYS_SECRET
        return cls(secrets=secrets, **kwargs)

    # --- counting ---
    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.sends = 0
            self.recorded.clear()

    def snapshot(self) -> dict:
        with self._lock:
            calls = dict(self.calls)
            sends = self.sends
        return {
            "api_calls": sum(calls.values()),
            "http_requests": sends,
            "reads": sum(n for (_service, op), n in calls.items() if op in READ_OPERATIONS),
            "writes": sum(n for (_service, op), n in calls.items() if op not in READ_OPERATIONS),
            "by_operation": {f"{service}.{op}": n for (service, op), n in sorted(calls.items())},
        }

    def count_call(self, service: str, operation: str, params: dict) -> None:
        with self._lock:
            self.calls[(service, operation)] += 1
            if operation in self.record:
                self.recorded.append((service, operation, dict(params)))  # botocore rewrites some in place

    def count_send(self) -> None:
        with self._lock:
            self.sends += 1

    # --- answering ---
    def respond(self, request, service: str, operation: str):
        from botocore.awsrequest import AWSResponse

        body = request.body
        if hasattr(body, "read"):
            # The network would read (and checksum, for aws-chunked uploads) the whole body: so do we.
            while body.read(1 << 16):
                pass
        headers = {"x-amzn-RequestId": "bench-request", "Date": "Thu, 26 Nov 2026 12:00:00 GMT"}
        if service in _JSON_TYPES:
            payload = json.loads(body) if isinstance(body, (bytes, str)) and body else {}
            data = json.dumps(self._json_answer(service, operation, payload)).encode()
            headers["Content-Type"] = _JSON_TYPES[service]
        elif service == "sesv2":
            data = json.dumps(self._ses_answer(operation)).encode()
            headers["Content-Type"] = "application/json"
        elif operation == "GetObject":
            path = unquote(urlsplit(request.url).path)  # /key, or /bucket/key in path style
            data = next((body for key, body in self.objects.items() if path.endswith("/" + key)), b"")
        elif operation == "DeleteObjects":
            data = b'<?xml version="1.0" encoding="UTF-8"?><DeleteResult></DeleteResult>'
            headers["Content-Type"] = "application/xml"
        else:  # S3 PutObject and anything else REST-shaped: an empty 200
            data = b""
            headers["ETag"] = '"bench"'
        headers["Content-Length"] = str(len(data))
        return AWSResponse(request.url, 200, headers, _Body(data))

    def _json_answer(self, service: str, operation: str, payload: dict) -> dict:
        if service == "secretsmanager" and operation == "GetSecretValue":
            secret_id = payload.get("SecretId", "")
            return {
                "ARN": secret_id,
                "Name": secret_id.rsplit(":", 1)[-1],
                "SecretString": self.secrets.get(secret_id, TOKEN_SECRET),
                "VersionId": "bench-version",
                "VersionStages": ["AWSCURRENT"],
                "CreatedDate": 1764158400.0,
            }
        if operation == "GetItem":
            pk = payload.get("Key", {}).get("pk", {}).get("S", "")
            item = self.domain_items.get(pk.removeprefix("DOMAIN#")) if pk.startswith("DOMAIN#") else None
            item = item or self.items.get(pk)
            return {"Item": item} if item else {}
        if operation == "UpdateItem" and payload.get("ReturnValues") == "ALL_NEW":
            item = self.items.get(payload.get("Key", {}).get("pk", {}).get("S", ""))
            return {"Attributes": item} if item else {}
        if operation in ("Query", "Scan"):
            return {"Items": [], "Count": 0, "ScannedCount": 0}
        if operation == "BatchWriteItem":
            return {"UnprocessedItems": {}}
        return {}  # PutItem, UpdateItem, DeleteItem, TransactWriteItems

    @staticmethod
    def _ses_answer(operation: str) -> dict:
        if operation == "SendEmail":
            return {"MessageId": "0100019bench0000-00000000-0000-0000-0000-000000000000-000000"}
        if operation == "GetAccount":
            # An account whose rate never makes the sender wait: the bench measures CPU, not pacing.
            return {"SendQuota": {"Max24HourSend": 1e9, "MaxSendRate": 1e9, "SentLast24Hours": 0.0}}
        return {}

    # --- activation ---
    def start(self, *, lazy: bool = False) -> AwsStub:
        """Answer (or count) from now on; `lazy` patches botocore only once something imports it."""
        if lazy:
            install_when_imported()
        else:
            install()
        _ACTIVE.append(self)
        return self

    def stop(self) -> None:
        _ACTIVE.remove(self)

    def __enter__(self) -> AwsStub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


_ACTIVE: list[AwsStub] = []
_CURRENT = threading.local()  # the operation this thread is about to send
_INSTALLED = False
_ORIGINALS: list[tuple[type, str, Callable]] = []  # what uninstall() puts back


def active() -> AwsStub | None:
    return _ACTIVE[-1] if _ACTIVE else None


def _patch_client(client_module) -> None:
    base = client_module.BaseClient
    original = base._make_api_call
    _ORIGINALS.append((base, "_make_api_call", original))

    def _make_api_call(self, operation_name, api_params):
        stub = active()
        if stub is not None:
            stub.count_call(self.meta.service_model.service_name, operation_name, api_params)
        _CURRENT.op = (self.meta.service_model.service_name, operation_name)
        return original(self, operation_name, api_params)

    base._make_api_call = _make_api_call


def _patch_endpoint(endpoint_module) -> None:
    endpoint = endpoint_module.Endpoint
    original = endpoint._send
    _ORIGINALS.append((endpoint, "_send", original))

    def _send(self, request):
        stub = active()
        if stub is None:
            return original(self, request)
        stub.count_send()
        if not stub.answer:
            return original(self, request)
        service, operation = getattr(_CURRENT, "op", ("", ""))
        fault = stub.faults.get((service, operation))
        if fault:
            return _fail(self, request, fault)
        return stub.respond(request, service, operation)

    endpoint._send = _send


def _fail(endpoint, request, fault: str):
    """What a failing service does to one attempt: a 500, or nothing until the read timeout."""
    from botocore.awsrequest import AWSResponse
    from botocore.exceptions import ReadTimeoutError

    if fault == "hang":
        timeout = endpoint.http_session._timeout  # urllib3's Timeout, from the client's Config
        time.sleep(timeout[1] if isinstance(timeout, tuple) else float(timeout.read_timeout))
        raise ReadTimeoutError(endpoint_url=request.url)
    data = json.dumps({"__type": "com.amazonaws.dynamodb.v20120810#InternalServerError", "message": "down"})
    headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": "bench-fault"}
    return AWSResponse(request.url, 500, {**headers, "Content-Length": str(len(data))}, _Body(data.encode()))


def install() -> None:
    """Patch botocore now (imports it)."""
    global _INSTALLED
    if _INSTALLED:
        return
    import botocore.client
    import botocore.endpoint

    _patch_client(botocore.client)
    _patch_endpoint(botocore.endpoint)
    _INSTALLED = True


def uninstall() -> None:
    """Put botocore back as it was (for test processes that go on to other tests)."""
    global _INSTALLED
    while _ORIGINALS:
        owner, name, original = _ORIGINALS.pop()
        setattr(owner, name, original)
    _ACTIVE.clear()
    _INSTALLED = False


class _AfterImport(importlib.abc.MetaPathFinder):
    """Run a callback on a module right after it is first imported (a post-import hook)."""

    def __init__(self, name: str, callback: Callable):
        self.name = name
        self.callback = callback

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module
        callback = self.callback

        def exec_and_patch(module):
            exec_module(module)
            callback(module)

        spec.loader.exec_module = exec_and_patch
        return spec


def install_when_imported() -> None:
    """Patch botocore as soon as the code under test imports it, and not before (cold starts)."""
    global _INSTALLED
    if _INSTALLED:
        return
    if "botocore.client" in sys.modules:
        install()
        return
    sys.meta_path.insert(0, _AfterImport("botocore.endpoint", _patch_endpoint))
    sys.meta_path.insert(0, _AfterImport("botocore.client", _patch_client))
    _INSTALLED = True


# In the development environment but not in the Lambda runtime or the layer (aws-sam-cli brings them):
# botocore and urllib3 import them when present, which would put their import time on every cold start.
NOT_IN_LAMBDA = ("awscrt", "OpenSSL")


def hide_non_lambda_packages() -> None:
    """Make those packages look uninstalled: a None in sys.modules fails their import and makes
    importlib.util.find_spec answer None, as for a package that is not there."""
    for name in NOT_IN_LAMBDA:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]
