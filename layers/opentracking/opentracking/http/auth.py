"""API keys, as Mailgun does them: HTTP Basic auth, user `api`, password the key.

Two sources of keys:
- the account key in the `ApiKeysSecret` secret ({"account": "<key>"}), generated at deploy time, read
  through Powertools parameters (cached): it bootstraps everything else;
- keys made through `POST /v1/keys`, stored only as the SHA-256 of the key (`APIKEY#<hex>`), looked up
  by that digest. `kind=user` keys are account-wide (`admin`); `kind=domain` keys (`role=sending`) can only
  send for their own domain.

Account keys are compared as digests in constant time; stored keys are found by their digest, so the time
taken does not depend on how much of a guess was right. The pixel never asks for a key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opentracking.core.errors import BadRequest, NotFound, OpenTrackingError
from opentracking.domains import registry
from opentracking.storage import keys, store
from opentracking.tracking.tokens import secrets_provider

KINDS = {"user": "admin", "domain": "sending"}  # kind -> the role it may have
_SENDING_PATH = re.compile(r"^/v3/([^/]+)/messages(?:\.mime)?$")


class Unauthorized(OpenTrackingError):
    status = 401


class Forbidden(OpenTrackingError):
    status = 403


@dataclass(frozen=True)
class Principal:
    """Who a request authenticated as."""

    role: str  # "admin" or "sending"
    domain: str | None = None  # the only domain a sending key may send for
    key_id: str = "account"

    def authorize(self, method: str, path: str) -> None:
        if self.role == "admin":
            return
        found = _SENDING_PATH.match(path)
        if method == "POST" and found and found.group(1).lower() == self.domain:
            return
        raise Forbidden(f"Forbidden: this sending key can only send messages for {self.domain}")


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def presented_key(authorization: str | None) -> str | None:
    """The key in an `Authorization: Basic base64(api:<key>)` header, or None."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, sep, key = decoded.partition(":")
    if not sep or user != "api" or not key:
        return None
    return key


def account_key_digests(secret_name: str) -> list[bytes]:
    secret = secrets_provider().get(secret_name, transform="json")
    if not isinstance(secret, dict):
        return []
    return [_digest(str(value)) for name, value in secret.items() if name.startswith("account") and value]


def authenticate(authorization: str | None, secret_name: str, table: str) -> Principal:
    """The principal a request's key stands for; Unauthorized when there is none or it is unknown."""
    key = presented_key(authorization)
    if key is None:
        raise Unauthorized("Forbidden: HTTP Basic auth with user 'api' and your API key is required")
    presented = _digest(key)
    # Compare against every account key so the time taken does not depend on which one matched.
    matched = False
    for digest in account_key_digests(secret_name):
        matched |= hmac.compare_digest(presented, digest)
    if matched:
        return Principal(role="admin")
    item = store.get_item(table, keys.api_key_key(presented.hex()))
    if (
        item is None
        or item.get("is_disabled")
        or (item.get("expires_at") and int(item["expires_at"]) < time.time())
    ):
        raise Unauthorized("Forbidden: invalid API key")
    return Principal(role=item["role"], domain=item.get("domain_name"), key_id=item["id"])


def _key_time(timestamp: float) -> str:
    """As Mailgun's keys API writes times: ISO 8601 in UTC without a zone ("2006-01-02T15:04:05"), which its
    Go SDK parses with exactly that layout (an RFC 2822 date or a null fails there)."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _key_object(item: dict[str, Any]) -> dict[str, Any]:
    created = float(item["created_at"])
    return {
        "id": item["id"],
        "description": item.get("description", ""),
        "kind": item["kind"],
        "role": item["role"],
        "domain_name": item.get("domain_name") or "",
        "created_at": _key_time(created),
        "updated_at": _key_time(created),
        "expires_at": _key_time(int(item["expires_at"])) if item.get("expires_at") else "",
        "is_disabled": bool(item.get("is_disabled", False)),
        "disabled_reason": "",
        "requestor": "",
        "user_name": "",
    }


def create_key(
    table: str,
    *,
    kind: str | None,
    role: str | None,
    domain_name: str | None,
    description: str | None,
    expiration: str | None,
) -> dict[str, Any]:
    """Make a key; its secret is returned once and stored only as a digest."""
    kind = (kind or "user").strip().lower()
    if kind not in KINDS:
        raise BadRequest("'kind' must be user or domain")
    role = (role or KINDS[kind]).strip().lower()
    if role != KINDS[kind]:
        raise BadRequest(f"a {kind} key has the role {KINDS[kind]}")
    domain = None
    if kind == "domain":
        if not domain_name:
            raise BadRequest("'domain_name' parameter is required for a domain key")
        domain = registry.get(registry.normalise_domain(domain_name)).name
    expires_at = None
    if expiration:
        if not (expiration.strip().isascii() and expiration.strip().isdigit()) or int(expiration) == 0:
            raise BadRequest("'expiration' must be a number of seconds")
        expires_at = int(time.time()) + int(expiration)
    secret = "key-" + secrets.token_hex(24)
    item = {
        **keys.api_key_key(_digest(secret).hex()),
        "type": "apikey",
        "gsi1pk": keys.API_KEY_LIST,
        "gsi1sk": str(uuid.uuid4()),
        "kind": kind,
        "role": role,
        "domain_name": domain,
        "description": (description or "")[:500],
        "created_at": str(time.time()),
        "expires_at": expires_at,
    }
    item["id"] = item["gsi1sk"]
    store.put_item(table, item)
    return {"key": {**_key_object(item), "secret": secret}, "message": "great success"}


def list_keys(table: str, *, domain_name: str | None, kind: str | None) -> dict[str, Any]:
    items = store.query_index(table, "gsi1", "gsi1pk", keys.API_KEY_LIST)
    listed = [
        _key_object(item)
        for item in items
        if (not domain_name or item.get("domain_name") == domain_name.lower())
        and (not kind or item["kind"] == kind.lower())
    ]
    return {"total_count": len(listed), "items": listed}


def delete_key(table: str, key_id: str) -> dict[str, Any]:
    matches = [
        item for item in store.query_index(table, "gsi1", "gsi1pk", keys.API_KEY_LIST) if item["id"] == key_id
    ]
    if not matches:
        raise NotFound("Key not found")
    store.delete_item(table, {"pk": matches[0]["pk"], "sk": keys.APIKEY_SK})
    return {"message": "key deleted"}
