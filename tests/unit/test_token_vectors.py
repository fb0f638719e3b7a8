"""The token format is what docs/tokens.md specifies: its known-answer vectors, and a second implementation
written from that page alone (hashlib, hmac and base64, nothing from opentracking) that agrees with the
library byte for byte. Tokens in sent mail must keep verifying, so these vectors never change; a new
construction is a new version with vectors of its own."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from opentracking.tracking import tokens

MASTER_KEY = b"opentracking-known-answer-master-key-0001"
KEY_ID = 7
COPY_ID = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
KEYRING = tokens.KeyRing.from_secret({"active": str(KEY_ID), str(KEY_ID): MASTER_KEY.decode()})

# From docs/tokens.md, "Known-answer vectors".
DOMAIN_KEY = "2626bae598b355a18f54fe20b5e262837f1c09a2a4c199e013b374ddb9ee3f7c"
PIXEL_V1 = "AQcAAQIDBAUGBwgJCgsMDQ4PZXhhbXBsZS5jb21hPbArN8k-PP1yLjQHMa32"
PIXEL_V2 = "AgcBAB4AAQIDBAUGBwgJCgsMDQ4PZXhhbXBsZS5jb238leGxPRa1cbFiVkJZbERB"
SHOP_URL = "https://shop.example.com/p?id=42&email=a%40b.c"
CLICK = (
    "AwcAAAAAAQIDBAUGBwgJCgsMDQ4PC2V4YW1wbGUuY29tQ3CIQVf8bqt_Va8NvdubP3DxBc-Hfrzj7puOyhaJ9Eb6S15LrPZRWvq-"
    "eqvE-CB-I5g2RYXYUfded-MMpoM"
)
IDN_URL = "https://bücher.example/ü"
CLICK_IDN = (
    "AwcBAZAAAQIDBAUGBwgJCgsMDQ4PFXhuLS1iY2hlci1rdmEuZXhhbXBsZdgxteQAgpknTUBqnPf4HRJXtaWdQCjJMHtZP1XAiYV5GCBnqK"
    "LWhAQKSg"
)


# --- the reference: docs/tokens.md, read literally -------------------------------------------------


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def prf(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def domain_key(domain: str) -> bytes:
    return prf(MASTER_KEY, b"opentracking/v1/domain-key\x00" + domain.encode("idna").lower())


def reference_pixel(domain: str, *, flags: int | None = None, days: int = 0) -> str:
    ascii_domain = domain.lower().encode("idna")
    if flags is None:
        body = bytes([1, KEY_ID]) + COPY_ID + ascii_domain
    else:
        body = bytes([2, KEY_ID, flags]) + days.to_bytes(2, "big") + COPY_ID + ascii_domain
    return b64(body + prf(domain_key(domain), body)[:16])


def reference_click(domain: str, url: str, *, flags: int = 0, days: int = 0) -> str:
    ascii_domain = domain.lower().encode("idna")
    key = domain_key(domain)
    mac_key, enc_key = prf(key, b"opentracking/v2/click-mac"), prf(key, b"opentracking/v2/click-enc")
    header = (
        bytes([3, KEY_ID, flags])
        + days.to_bytes(2, "big")
        + COPY_ID
        + bytes([len(ascii_domain)])
        + ascii_domain
    )
    plain = url.encode("utf-8")
    siv = prf(mac_key, header + plain)[:16]
    stream = b"".join(prf(enc_key, siv + n.to_bytes(4, "big")) for n in range(len(plain) // 32 + 1))
    return b64(header + siv + bytes(a ^ b for a, b in zip(plain, stream, strict=False)))


# --- the library against both ----------------------------------------------------------------------


def test_domain_key():
    assert KEYRING.domain_key(KEY_ID, "example.com").hex() == DOMAIN_KEY == domain_key("example.com").hex()


@pytest.mark.parametrize(
    ("issued", "vector", "reference"),
    [
        (
            lambda: tokens.issue_token(KEYRING, COPY_ID, "Example.COM"),
            PIXEL_V1,
            lambda: reference_pixel("example.com"),
        ),
        (
            lambda: tokens.issue_token(KEYRING, COPY_ID, "example.com", anonymize_ip=True, retention_days=30),
            PIXEL_V2,
            lambda: reference_pixel("example.com", flags=1, days=30),
        ),
        (
            lambda: tokens.issue_click_token(KEYRING, COPY_ID, "example.com", SHOP_URL),
            CLICK,
            lambda: reference_click("example.com", SHOP_URL),
        ),
        (
            lambda: tokens.issue_click_token(
                KEYRING, COPY_ID, "bücher.example", IDN_URL, anonymize_ip=True, retention_days=400
            ),
            CLICK_IDN,
            lambda: reference_click("bücher.example", IDN_URL, flags=1, days=400),
        ),
    ],
    ids=["pixel-v1", "pixel-v2", "click-v3", "click-v3-idn-privacy"],
)
def test_issued_tokens_are_the_vectors_and_the_reference(issued, vector, reference):
    assert issued() == vector == reference()


def test_the_vectors_verify_to_what_they_were_issued_for():
    assert tokens.verify_token(KEYRING, PIXEL_V1) == tokens.OpenClaims(COPY_ID.hex(), "example.com", KEY_ID)
    assert tokens.verify_token(KEYRING, PIXEL_V2) == tokens.OpenClaims(
        COPY_ID.hex(), "example.com", KEY_ID, True, 30
    )
    click = tokens.verify_click_token(KEYRING, CLICK)
    assert (click.copy_id, click.domain, click.url, click.anonymize_ip, click.retention_days) == (
        COPY_ID.hex(),
        "example.com",
        SHOP_URL,
        False,
        None,
    )
    idn = tokens.verify_click_token(KEYRING, CLICK_IDN)
    assert (idn.domain, idn.url, idn.anonymize_ip, idn.retention_days) == (
        "xn--bcher-kva.example",
        IDN_URL,
        True,
        400,
    )


def test_every_byte_of_a_click_vector_is_authenticated():
    raw = base64.urlsafe_b64decode(CLICK + "=" * (-len(CLICK) % 4))
    for position in range(len(raw)):
        edited = bytearray(raw)
        edited[position] ^= 0x01
        with pytest.raises(tokens.InvalidToken):
            tokens.verify_click_token(KEYRING, b64(bytes(edited)))
