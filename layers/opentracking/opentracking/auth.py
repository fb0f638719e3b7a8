"""API keys, as Mailgun does them: HTTP Basic auth, user `api`, password the key.

The account key lives in the `ApiKeysSecret` secret ({"account": "<key>"}), generated at deploy time, and
is read through Powertools parameters (cached). Keys are compared as SHA-256 digests in constant time, so
neither the key's length nor its prefix leaks through timing. The pixel never asks for a key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from opentracking.errors import OpenTrackingError
from opentracking.tokens import secrets_provider


class Unauthorized(OpenTrackingError):
    status = 401


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


def authenticate(authorization: str | None, secret_name: str) -> None:
    """Raise Unauthorized unless the header carries a valid account key."""
    key = presented_key(authorization)
    if key is None:
        raise Unauthorized("Forbidden: HTTP Basic auth with user 'api' and your API key is required")
    presented = _digest(key)
    # Compare against every configured key so the time taken does not depend on which one matched.
    matched = False
    for digest in account_key_digests(secret_name):
        matched |= hmac.compare_digest(presented, digest)
    if not matched:
        raise Unauthorized("Forbidden: invalid API key")
