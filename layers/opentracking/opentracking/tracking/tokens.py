"""Signed, opaque pixel and click tokens; the format's specification, with known-answer vectors, is
docs/tokens.md.

A token names one message copy and its sending domain, nothing else: the recipient's address and the
tags stay in DynamoDB. Layout before base64url (no padding):

    version 1: version | key id | copy id (16 bytes) | domain (ASCII, lower case) | tag (16 bytes)
    version 2: version | key id | flags (1 byte) | retention days (2 bytes, big-endian) | copy id | domain
               | tag

Version 2 carries the domain's privacy instructions for the pixel, which reads nothing: bit 0 of `flags`
asks it to anonymise the reader's IP address before its one write, and `retention days` (0: the
deployment's default) is how long the raw open is kept. They are signed like the rest, so a reader cannot
switch anonymisation off. A copy without instructions still gets a version 1 token (4 characters
shorter), and both versions verify, so links already sent keep working.

The tag is HMAC-SHA256 truncated to 128 bits, keyed with a per-domain key derived from the master key
named by the key id. Per-domain keys mean one domain's tokens can never be replayed against another, and
the key id lets operators rotate the master key while old links keep working. A token for a 20-character
domain is 72 characters long.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

from aws_lambda_powertools.utilities import parameters

from opentracking.core.errors import OpenTrackingError

TOKEN_VERSION = 1
TOKEN_VERSION_PRIVACY = 2
COPY_ID_BYTES = 16
TAG_BYTES = 16
MAX_DOMAIN_BYTES = 253
FLAG_ANONYMIZE_IP = 0x01
MAX_RETENTION_DAYS = 0xFFFF
# Bytes between the version/key id and the copy id, by version.
_OPTION_BYTES = {TOKEN_VERSION: 0, TOKEN_VERSION_PRIVACY: 3}
# Fixed-size fields around the variable domain; anything outside these bounds is rejected before any crypto.
_FIXED_BYTES = 2 + COPY_ID_BYTES + TAG_BYTES
MAX_TOKEN_CHARS = (4 * (_FIXED_BYTES + max(_OPTION_BYTES.values()) + MAX_DOMAIN_BYTES) + 2) // 3
_DOMAIN_KEY_LABEL = b"opentracking/v1/domain-key\x00"


class InvalidToken(Exception):
    """The token is malformed, forged, edited or signed with a key this deployment does not hold."""


class KeyRingError(OpenTrackingError):
    """The signing-key secret is missing or malformed."""


@dataclass(frozen=True)
class OpenClaims:
    """What a verified token identifies."""

    copy_id: str  # hex
    domain: str
    key_id: int
    anonymize_ip: bool = False
    retention_days: int | None = None  # None: the deployment's EVENT_RETENTION_DAYS


@dataclass
class KeyRing:
    """Master keys by numeric key id, and the id new tokens are signed with."""

    active_key_id: int
    master_keys: dict[int, bytes]
    _domain_keys: dict[tuple[int, str], bytes] = field(default_factory=dict, repr=False)
    # (mac key, enc key) of click tokens by (key id, domain): a submission seals every link of every copy.
    _click_keys: dict[tuple[int, str], tuple[bytes, bytes]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_secret(cls, secret: dict[str, Any]) -> KeyRing:
        """Build from the secret's JSON: {"active": "1", "1": "<key>", "2": "<key>"}."""
        try:
            keys = {int(kid): str(value).encode() for kid, value in secret.items() if kid != "active"}
            active = int(secret["active"])
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyRingError("token key secret must be {'active': '<kid>', '<kid>': '<key>', ...}") from exc
        if active not in keys:
            raise KeyRingError(f"active token key id {active} has no key in the secret")
        for kid, key in keys.items():
            if not 1 <= kid <= 255:
                raise KeyRingError(f"token key id {kid} is out of range 1..255")
            if len(key) < 32:
                raise KeyRingError(f"token key {kid} is shorter than 32 bytes")
        return cls(active_key_id=active, master_keys=keys)

    def signing_key_id(self, wanted: int | None = None) -> int:
        """The key a new token is sealed with: `wanted` while the ring still holds it (a copy rendered
        later, at sending, is then byte for byte the one planned at submission), else the active key."""
        return wanted if wanted is not None and wanted in self.master_keys else self.active_key_id

    def domain_key(self, key_id: int, domain: str) -> bytes:
        cache_key = (key_id, domain)
        key = self._domain_keys.get(cache_key)
        if key is None:
            master = self.master_keys[key_id]
            key = hmac.new(master, _DOMAIN_KEY_LABEL + domain.encode("ascii"), hashlib.sha256).digest()
            self._domain_keys[cache_key] = key
        return key


def new_copy_id() -> bytes:
    return secrets.token_bytes(COPY_ID_BYTES)


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


# The IDNA codec is pure Python, and one submission seals thousands of tokens for one domain.
@lru_cache(maxsize=1024)
def _normalise_domain(domain: str) -> bytes:
    try:
        encoded = domain.strip().lower().encode("idna")
    except UnicodeError as exc:
        raise ValueError(f"not a valid domain name: {domain!r}") from exc
    if not encoded or len(encoded) > MAX_DOMAIN_BYTES:
        raise ValueError(f"not a valid domain name: {domain!r}")
    return encoded


def _check_claims(copy_id: bytes, retention_days: int | None) -> None:
    """What every token carries, checked before it is sealed."""
    if len(copy_id) != COPY_ID_BYTES:
        raise ValueError("copy id must be 16 bytes")
    if retention_days is not None and not 1 <= retention_days <= MAX_RETENTION_DAYS:
        raise ValueError("retention days out of range")


def issue_token(
    keyring: KeyRing,
    copy_id: bytes,
    domain: str,
    *,
    anonymize_ip: bool = False,
    retention_days: int | None = None,
    key_id: int | None = None,
) -> str:
    _check_claims(copy_id, retention_days)
    kid = keyring.signing_key_id(key_id)
    domain_bytes = _normalise_domain(domain)
    if anonymize_ip or retention_days is not None:
        flags = FLAG_ANONYMIZE_IP if anonymize_ip else 0
        header = bytes((TOKEN_VERSION_PRIVACY, kid, flags)) + (retention_days or 0).to_bytes(2, "big")
    else:
        header = bytes((TOKEN_VERSION, kid))
    body = header + copy_id + domain_bytes
    # hmac.digest: the one-shot HMAC in C, the same bytes as hmac.new(...).digest() without the objects.
    tag = hmac.digest(keyring.domain_key(kid, domain_bytes.decode()), body, "sha256")[:TAG_BYTES]
    return _b64encode(body + tag)


def _decode_canonical(token: str) -> bytes:
    """The token's bytes, from its one canonical base64url spelling only. The decoder silently drops
    characters outside the alphabet (`.`, `!`, `*`) and ignores the last character's unused bits, so many
    spellings decode alike: an edited URL must not count as an open, nor redirect, not even where the
    original would have."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidToken("token is not base64url") from exc
    if _b64encode(raw) != token:
        raise InvalidToken("token is not canonical base64url")
    return raw


def verify_token(keyring: KeyRing, token: str) -> OpenClaims:
    """Return the claims of a genuine token; raise InvalidToken for anything else.

    The tag comparison is constant-time; rejecting on length or version first leaks nothing secret.
    """
    if not token or len(token) > MAX_TOKEN_CHARS:
        raise InvalidToken("token length out of range")
    raw = _decode_canonical(token)
    options = _OPTION_BYTES.get(raw[0]) if raw else None
    if options is None or len(raw) <= _FIXED_BYTES + options:
        raise InvalidToken("unknown token version or too short")
    kid = raw[1]
    if kid not in keyring.master_keys:
        raise InvalidToken("unknown key id")
    body, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
    copy_start = 2 + options
    domain_bytes = body[copy_start + COPY_ID_BYTES :]
    try:
        domain = domain_bytes.decode("ascii")
    except UnicodeDecodeError as exc:
        raise InvalidToken("domain is not ASCII") from exc
    expected = hmac.new(keyring.domain_key(kid, domain), body, hashlib.sha256).digest()[:TAG_BYTES]
    if not hmac.compare_digest(expected, tag):
        raise InvalidToken("bad signature")
    flags, days = (body[2], int.from_bytes(body[3:5], "big")) if options else (0, 0)
    return OpenClaims(
        copy_id=body[copy_start : copy_start + COPY_ID_BYTES].hex(),
        domain=domain,
        key_id=kid,
        anonymize_ip=bool(flags & FLAG_ANONYMIZE_IP),
        retention_days=days or None,
    )


@cache
def secrets_provider(profile: str = "default") -> parameters.SecretsProvider:
    """Powertools' Secrets Manager provider on this package's client (its timeouts, its one session)."""
    from opentracking.core.aws import client

    return parameters.SecretsProvider(boto3_client=client("secretsmanager", profile))


def load_keyring(secret_name: str, *, profile: str = "default") -> KeyRing:
    """The key ring from Secrets Manager, cached by Powertools for POWERTOOLS_PARAMETERS_MAX_AGE seconds."""
    global _last_keyring
    secret = secrets_provider(profile).get(secret_name, transform="json")
    if not isinstance(secret, dict):
        raise KeyRingError("token key secret is not a JSON object")
    # Powertools hands back the same cached object until max_age passes; rebuild (and re-derive the
    # per-domain keys) only when the secret's content actually changed.
    cached_secret, keyring = _last_keyring
    if keyring is None or (secret is not cached_secret and secret != cached_secret):
        keyring = KeyRing.from_secret(secret)
    _last_keyring = (secret, keyring)
    return keyring


_last_keyring: tuple[dict[str, Any] | None, KeyRing | None] = (None, None)


def reset_cache() -> None:
    global _last_keyring
    _last_keyring = (None, None)
    secrets_provider.cache_clear()
    parameters.clear_caches()


# --- click tokens -----------------------------------------------------------------------------------
#
# A click token names the copy like a pixel token and also carries the link's URL, sealed: the redirect
# must work with no read at all (DynamoDB or S3 may be down), so the URL travels in the token; and a URL
# may name the recipient (`?email=...` after batch substitution), so it is encrypted, not just signed.
# Layout before base64url:
#
#     version 3 | key id | flags (1) | retention days (2) | copy id (16) | domain length (1) | domain
#     | SIV (16) | URL XOR keystream
#
# The flags and retention days are the pixel's version 2 privacy instructions (anonymise the address before
# the one write, keep the raw click that many days), so the redirect honours them without a read.
# The construction is SIV (Rogaway and Shrimpton's deterministic authenticated encryption) built from the
# HMAC-SHA256 the pixel tokens already use, so the hot path needs no new dependency: the SIV is the MAC of
# the header and the URL (it authenticates both), and the keystream is HMAC-SHA256(enc key, SIV | counter).
# Both keys are derived from the per-domain key. The same copy and URL always give the same token.

CLICK_TOKEN_VERSION = 3
_CLICK_OPTION_BYTES = 3  # flags, retention days
MAX_CLICK_URL_BYTES = 2048  # longer links are left untracked: a longer token would outgrow what proxies pass
_CLICK_FIXED_BYTES = 2 + _CLICK_OPTION_BYTES + COPY_ID_BYTES + 1 + TAG_BYTES
MAX_CLICK_TOKEN_CHARS = (4 * (_CLICK_FIXED_BYTES + MAX_DOMAIN_BYTES + MAX_CLICK_URL_BYTES) + 2) // 3
_CLICK_MAC_LABEL = b"opentracking/v2/click-mac"
_CLICK_ENC_LABEL = b"opentracking/v2/click-enc"


@dataclass(frozen=True)
class ClickClaims:
    """What a verified click token identifies: the copy, its domain, and the link's original URL."""

    copy_id: str  # hex
    domain: str
    key_id: int
    url: str
    anonymize_ip: bool = False
    retention_days: int | None = None  # None: the deployment's EVENT_RETENTION_DAYS

    def open_claims(self) -> OpenClaims:
        """The same copy and instructions as a pixel token names (the raw click is written like an open)."""
        return OpenClaims(self.copy_id, self.domain, self.key_id, self.anonymize_ip, self.retention_days)


def _click_keys(keyring: KeyRing, key_id: int, domain: str) -> tuple[bytes, bytes]:
    keys = keyring._click_keys.get((key_id, domain))
    if keys is None:
        domain_key = keyring.domain_key(key_id, domain)
        keys = (
            hmac.digest(domain_key, _CLICK_MAC_LABEL, "sha256"),
            hmac.digest(domain_key, _CLICK_ENC_LABEL, "sha256"),
        )
        keyring._click_keys[(key_id, domain)] = keys
    return keys


def _keystream(enc_key: bytes, siv: bytes, length: int) -> bytes:
    blocks = (length + 31) // 32
    stream = b"".join(hmac.digest(enc_key, siv + i.to_bytes(4, "big"), "sha256") for i in range(blocks))
    return stream[:length]


def _xor(data: bytes, stream: bytes) -> bytes:
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(len(data), "big")


def issue_click_token(
    keyring: KeyRing,
    copy_id: bytes,
    domain: str,
    url: str,
    *,
    anonymize_ip: bool = False,
    retention_days: int | None = None,
    key_id: int | None = None,
) -> str:
    """Seal `url` for one copy; ValueError when the URL is too long to travel in a link."""
    _check_claims(copy_id, retention_days)
    url_bytes = url.encode("utf-8")
    if not url_bytes or len(url_bytes) > MAX_CLICK_URL_BYTES:
        raise ValueError("URL is empty or too long to seal")
    kid = keyring.signing_key_id(key_id)
    domain_bytes = _normalise_domain(domain)
    options = bytes((FLAG_ANONYMIZE_IP if anonymize_ip else 0,)) + (retention_days or 0).to_bytes(2, "big")
    header = (
        bytes((CLICK_TOKEN_VERSION, kid)) + options + copy_id + bytes((len(domain_bytes),)) + domain_bytes
    )
    mac_key, enc_key = _click_keys(keyring, kid, domain_bytes.decode())
    siv = hmac.digest(mac_key, header + url_bytes, "sha256")[:TAG_BYTES]
    return _b64encode(header + siv + _xor(url_bytes, _keystream(enc_key, siv, len(url_bytes))))


def verify_click_token(keyring: KeyRing, token: str) -> ClickClaims:
    """The claims of a genuine click token; InvalidToken for anything else (forged, edited, truncated,
    a pixel token, an unknown key). The SIV comparison is constant-time."""
    if not token or len(token) > MAX_CLICK_TOKEN_CHARS:
        raise InvalidToken("token length out of range")
    raw = _decode_canonical(token)
    if len(raw) <= _CLICK_FIXED_BYTES or raw[0] != CLICK_TOKEN_VERSION:
        raise InvalidToken("unknown token version or too short")
    kid = raw[1]
    if kid not in keyring.master_keys:
        raise InvalidToken("unknown key id")
    copy_start = 2 + _CLICK_OPTION_BYTES
    domain_start = copy_start + COPY_ID_BYTES + 1
    domain_end = domain_start + raw[domain_start - 1]
    if len(raw) <= domain_end + TAG_BYTES:
        raise InvalidToken("token too short for its domain")
    header, siv = raw[:domain_end], raw[domain_end : domain_end + TAG_BYTES]
    sealed = raw[domain_end + TAG_BYTES :]
    try:
        domain = header[domain_start:].decode("ascii")
    except UnicodeDecodeError as exc:
        raise InvalidToken("domain is not ASCII") from exc
    mac_key, enc_key = _click_keys(keyring, kid, domain)
    url_bytes = _xor(sealed, _keystream(enc_key, siv, len(sealed)))
    expected = hmac.new(mac_key, header + url_bytes, hashlib.sha256).digest()[:TAG_BYTES]
    if not hmac.compare_digest(expected, siv):
        raise InvalidToken("bad signature")
    try:
        url = url_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:  # only reachable with a genuine key: never issued so
        raise InvalidToken("sealed URL is not UTF-8") from exc
    return ClickClaims(
        copy_id=header[copy_start : copy_start + COPY_ID_BYTES].hex(),
        domain=domain,
        key_id=kid,
        url=url,
        anonymize_ip=bool(header[2] & FLAG_ANONYMIZE_IP),
        retention_days=int.from_bytes(header[3:5], "big") or None,
    )
