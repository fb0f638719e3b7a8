"""Pixel tokens: signed, opaque, short, rotatable, and rejected when forged or edited."""

import base64
import string

import pytest

from opentracking.tracking.tokens import (
    MAX_TOKEN_CHARS,
    InvalidToken,
    KeyRing,
    KeyRingError,
    issue_token,
    new_copy_id,
    verify_token,
)

KEY_1 = "k" * 48
KEY_2 = "z" * 48


def ring(active: str = "1", **keys: str) -> KeyRing:
    return KeyRing.from_secret({"active": active, **(keys or {"1": KEY_1})})


def test_round_trip_identifies_copy_and_domain():
    # GIVEN a copy id
    copy_id = new_copy_id()
    # WHEN a token is issued and verified
    claims = verify_token(ring(), issue_token(ring(), copy_id, "Example.COM"))
    # THEN it names that copy, the normalised domain and the key id
    assert (claims.copy_id, claims.domain, claims.key_id) == (copy_id.hex(), "example.com", 1)


def test_token_is_url_safe_short_and_reveals_no_address():
    for _ in range(200):
        token = issue_token(ring(), new_copy_id(), "mg.example.com")
        assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        assert len(token) <= 80
    # The readable part of a token is its sending domain; everything else is the random copy id and the
    # tag, whose bytes may be anything (an "@" among them 13% of the time, so only a fixed id and key make
    # this exact). No recipient address goes in: issuing does not even take one.
    token = issue_token(ring(), bytes.fromhex("00112233445566778899aabbccddeeff"), "mg.example.com")
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert b"@" not in raw and raw.count(b"example") == 1


def test_copy_ids_are_unique():
    assert len({new_copy_id() for _ in range(1000)}) == 1000


def test_every_single_bit_flip_is_rejected():
    keyring = ring()
    token = issue_token(keyring, new_copy_id(), "example.com")
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    for index in range(len(raw)):
        for bit in range(8):
            edited = bytearray(raw)
            edited[index] ^= 1 << bit
            forged = base64.urlsafe_b64encode(bytes(edited)).rstrip(b"=").decode()
            with pytest.raises(InvalidToken):
                verify_token(keyring, forged)


def test_every_character_edit_is_rejected():
    """Every edit of the token string itself, including the last character's padding bits: a spelling
    other than the canonical one is refused (it would be a second spelling of one open)."""
    keyring = ring()
    token = issue_token(keyring, new_copy_id(), "example.com")
    alphabet = string.ascii_letters + string.digits + "-_"
    for index, char in enumerate(token):
        for replacement in {alphabet[(alphabet.index(char) + step) % 64] for step in (1, 17, 32, 63)}:
            edited = token[:index] + replacement + token[index + 1 :]
            with pytest.raises(InvalidToken):
                verify_token(keyring, edited)


def test_token_moved_to_another_domain_is_rejected():
    # GIVEN a token for one domain, re-signed body for another domain without the key
    keyring = ring()
    copy_id = new_copy_id()
    token = issue_token(keyring, copy_id, "a.example")
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    swapped = raw.replace(b"a.example", b"b.example")
    # WHEN verified THEN rejected: the tag is bound to the per-domain key
    with pytest.raises(InvalidToken):
        verify_token(keyring, base64.urlsafe_b64encode(swapped).rstrip(b"=").decode())


def test_token_signed_with_another_deployment_key_is_rejected():
    token = issue_token(ring(**{"1": KEY_2}), new_copy_id(), "example.com")
    with pytest.raises(InvalidToken):
        verify_token(ring(), token)


def test_rotation_keeps_old_tokens_valid_while_their_key_is_kept():
    # GIVEN a token signed with key 1
    old = issue_token(ring(), new_copy_id(), "example.com")
    # WHEN key 2 becomes active with key 1 still present
    rotated = ring("2", **{"1": KEY_1, "2": KEY_2})
    new = issue_token(rotated, new_copy_id(), "example.com")
    # THEN both verify, new tokens carry key id 2, and dropping key 1 retires old tokens
    assert verify_token(rotated, old).key_id == 1
    assert verify_token(rotated, new).key_id == 2
    with pytest.raises(InvalidToken):
        verify_token(ring("2", **{"2": KEY_2}), old)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "a",
        "!!!!",
        "AQ",
        "A" * (MAX_TOKEN_CHARS + 1),
        "AQEAAAAAAAAAAAAAAAAAAAAAZXhhbXBsZS5jb20AAAAAAAAAAAAAAAAAAAAA",
        "../../etc/passwd",
        "%00",
        "AQE\u00e9",
        "====",
        "AgEAAAAAAAAAAAAAAAAAAAAAZXhhbXBsZS5jb20AAAAAAAAAAAAAAAAAAAAA",
    ],
)
def test_garbage_is_rejected(garbage):
    with pytest.raises(InvalidToken):
        verify_token(ring(), garbage)


@pytest.mark.parametrize(
    "secret",
    [
        {},
        {"active": "1"},
        {"active": "2", "1": KEY_1},
        {"active": "x", "1": KEY_1},
        {"active": "1", "1": "short"},
        {"active": "300", "300": KEY_1},
    ],
)
def test_malformed_key_secret_is_refused(secret):
    with pytest.raises(KeyRingError):
        KeyRing.from_secret(secret)


def test_issued_tokens_are_the_documented_construction_byte_for_byte():
    """Issuing is tuned for submissions (cached keys, one-shot HMACs); the bytes must stay those of the
    construction itself, spelled out here with hmac.new, or every token in flight would stop verifying."""
    import hashlib
    import hmac

    from opentracking.tracking import tokens

    keyring = ring("2", **{"1": KEY_1, "2": KEY_2})

    def mac(key: bytes, data: bytes) -> bytes:
        return hmac.new(key, data, hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    domain_key = mac(KEY_2.encode(), tokens._DOMAIN_KEY_LABEL + b"xn--bcher-kva.example")
    for copy_id in (bytes(16), bytes(range(16))):
        body = bytes((tokens.TOKEN_VERSION_PRIVACY, 2, tokens.FLAG_ANONYMIZE_IP)) + (30).to_bytes(2, "big")
        body += copy_id + b"xn--bcher-kva.example"
        assert issue_token(keyring, copy_id, "Bücher.example", anonymize_ip=True, retention_days=30) == b64(
            body + mac(domain_key, body)[: tokens.TAG_BYTES]
        )
        for url in ("https://example.org/", "https://example.org/" + "é/?a=1&b=2" * 20):
            url_bytes = url.encode()
            header = bytes((tokens.CLICK_TOKEN_VERSION, 2, 0)) + (0).to_bytes(2, "big") + copy_id
            header += bytes((21,)) + b"xn--bcher-kva.example"
            mac_key = mac(domain_key, tokens._CLICK_MAC_LABEL)
            enc_key = mac(domain_key, tokens._CLICK_ENC_LABEL)
            siv = mac(mac_key, header + url_bytes)[: tokens.TAG_BYTES]
            stream = b"".join(
                mac(enc_key, siv + i.to_bytes(4, "big")) for i in range(len(url_bytes) // 32 + 1)
            )
            sealed = bytes(a ^ b for a, b in zip(url_bytes, stream, strict=False))
            assert tokens.issue_click_token(keyring, copy_id, "Bücher.example", url) == b64(
                header + siv + sealed
            )
