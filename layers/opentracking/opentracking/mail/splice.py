"""Plan once, splice per copy: the tracked copies of one message differ only in their tokens.

Every copy of a message (without recipient-variables) is the same bytes before tracking, and the pixel's
place, the links and their encoding context do not depend on the recipient: only the tokens do. Scanning
50 KB of HTML and rewriting its links per copy (the reference path: ``links.rewrite`` then ``inject``) is
therefore repeated work. This module runs the reference path a few times per *message* and turns it into a
template; a copy is then its tokens joined into the template's constant bytes.

How the template is found (no second implementation of the injector's or the rewriter's rules): the
reference render runs twice with probe tokens of the real tokens' lengths, made of different characters
at every position (lower case in the first run, upper case in the second). Bytes that are equal in both
outputs are constant; the bytes that differ are where token characters landed. Read in order, the first
run's differing bytes must spell out its probe tokens one after another (each probe starts with its own
index, so which token landed where is read back, whatever order the render asked for them in; one token
may land several times, one URL in several links), and the second run's must spell out the second run's
at the same places: only then is the template used. A quoted-printable soft line
break inside a token is a constant between two slots; a UTF-16 body puts a constant zero byte between
every two token bytes. Where the token's characters are transformed rather than copied (a base64 body:
each output byte mixes three input bytes), the differing bytes spell nothing and the message keeps the
reference path.

Tokens are base64url (``A-Z a-z 0-9 - _``): copied verbatim by every encoding the template accepts (HTML
attribute escaping, quoted-printable, 7bit/8bit, ASCII-compatible charsets, UTF-16/32), so a copy's real
tokens land exactly where the probes did. The caller checks one real copy against the reference path as
well before trusting the template with the rest.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

# What the render asks for: a key naming one token (the pixel's, or one link's), answered with the token
# or None (no token: the render leaves that link alone).
TokenFor = Callable[[Hashable], "str | None"]
Render = Callable[[TokenFor], "bytes | None"]

_LOWER = string.ascii_lowercase
_UPPER = string.ascii_uppercase


@dataclass(frozen=True)
class Template:
    """A message's tracked bytes with holes for its tokens.

    ``keys``: the tokens one copy needs, in the order the render asked for them (None where the render got
    no token). ``pieces``: constant bytes, or ``(index into keys, start, end)`` for a slice of that token.
    """

    keys: tuple[Hashable, ...]
    lengths: tuple[int | None, ...]
    pieces: tuple[bytes | tuple[int, int, int], ...]

    def fill(self, tokens: list[str | None]) -> bytes | None:
        """The copy's bytes for its tokens (one per key, in order); None if a token's length differs from
        the planned one (the copy must take the reference path)."""
        encoded: list[bytes] = []
        for token, length in zip(tokens, self.lengths, strict=True):
            if (None if token is None else len(token)) != length:
                return None
            encoded.append(b"" if token is None else token.encode("ascii"))
        return b"".join(
            piece if isinstance(piece, bytes) else encoded[piece[0]][piece[1] : piece[2]]
            for piece in self.pieces
        )

    def encode(self, params: dict[str, Any]) -> bytes:
        """The template as one object (stored once per message): a magic line, a JSON line (its keys, their
        token lengths, where each piece is, and the caller's `params`), then the constant bytes. Keys must
        be tuples of strings (what the submission's renders ask for)."""
        keys: list[list[str]] = []
        for key in self.keys:
            if not (isinstance(key, tuple) and all(isinstance(part, str) for part in key)):
                raise ValueError("a stored template's keys are tuples of strings")
            keys.append(list(key))
        constants, layout = [], []
        offset = 0
        for piece in self.pieces:
            if isinstance(piece, bytes):
                constants.append(piece)
                layout.append([-1, offset, len(piece)])
                offset += len(piece)
            else:
                layout.append(list(piece))
        header = {
            "keys": keys,
            "lengths": list(self.lengths),
            "pieces": layout,
            "params": params,
        }
        return MAGIC + json.dumps(header, separators=(",", ":")).encode() + b"\n" + b"".join(constants)

    @classmethod
    def decode(cls, data: bytes) -> tuple[Template, dict[str, Any]]:
        """The template and its params from `encode`'s bytes; ValueError for anything else."""
        if not data.startswith(MAGIC):
            raise ValueError("not a copy template")
        end = data.index(b"\n", len(MAGIC))
        header = json.loads(data[len(MAGIC) : end])
        constants = memoryview(data)[end + 1 :]
        pieces: list[bytes | tuple[int, int, int]] = [
            bytes(constants[start : start + size]) if kind == -1 else (kind, start, size)
            for kind, start, size in header["pieces"]
        ]
        keys = tuple(tuple(key) for key in header["keys"])
        return cls(keys=keys, lengths=tuple(header["lengths"]), pieces=tuple(pieces)), header["params"]


MAGIC = b"opentracking-copy-template/1\n"


def is_template(data: bytes) -> bool:
    return data.startswith(MAGIC)


def _probe(index: int, length: int, width: int, alphabet: str) -> str:
    """The probe token for key *index*: the index in base 26 (*width* letters), then a filler."""
    digits = []
    for _ in range(width):
        index, digit = divmod(index, 26)
        digits.append(alphabet[digit])
    return "".join(reversed(digits)) + alphabet[-1] * (length - width)


# Each probe starts with its key's index in this many base-26 letters: up to 17,576 tokens per message.
_WIDTH = 3


def build(render: Render, length_for: Callable[[Hashable], int | None]) -> Template | None:
    """Run *render* with probe tokens and derive the template; None when it cannot be derived exactly
    (the render failed, or the tokens are not copied verbatim into its output)."""
    keys: list[Hashable] = []
    lengths: list[int | None] = []
    seen: dict[Hashable, int] = {}
    probes: tuple[list[str | None], list[str | None]] = ([], [])

    def first_run(key: Hashable) -> str | None:
        # The first run learns the keys in the order asked. A key asked twice is one token asked twice.
        if key not in seen:
            seen[key] = len(keys)
            keys.append(key)
            length = length_for(key)
            lengths.append(length)
            for tokens, alphabet in zip(probes, (_LOWER, _UPPER), strict=True):
                if length is not None and length > _WIDTH and len(keys) <= 26**_WIDTH:
                    tokens.append(_probe(len(keys) - 1, length, _WIDTH, alphabet))
                else:
                    tokens.append(None)
            if lengths[-1] is not None and probes[0][-1] is None:
                raise _Unplannable
        return probes[0][seen[key]]

    def second_run(key: Hashable) -> str | None:
        index = seen.get(key)
        if index is None:
            raise _Unplannable  # a token the first run did not ask for: the render is not repeatable
        return probes[1][index]

    try:
        first = render(first_run)
        second = render(second_run) if first is not None else None
    except _Unplannable:
        return None
    if first is None or second is None or len(first) != len(second):
        return None
    return _derive(first, second, probes[0], probes[1], lengths, _WIDTH, tuple(keys))


class _Unplannable(Exception):
    pass


def _derive(
    first: bytes,
    second: bytes,
    probe1: list[str | None],
    probe2: list[str | None],
    lengths: list[int | None],
    width: int,
    keys: tuple[Hashable, ...],
) -> Template | None:
    # Positions where the two outputs differ, found by comparing slices (in C) and narrowing down.
    diff = _differences(first, second)
    pieces: list[bytes | tuple[int, int, int]] = []
    last = 0  # end of the constant bytes already taken
    d = 0  # next differing position
    while d < len(diff):
        # The next token starts here: its first *width* differing bytes name it.
        if d + width > len(diff):
            return None
        label = bytes(first[p] for p in diff[d : d + width]).decode("latin-1")
        if not all(c in _LOWER for c in label):
            return None
        index = 0
        for c in label:
            index = index * 26 + _LOWER.index(c)
        # A key may land more than once (one URL in several links) or not at all (a link the render
        # left alone for its length): either way every differing byte is accounted for.
        if index >= len(lengths) or lengths[index] is None:
            return None
        token1, token2 = probe1[index], probe2[index]
        assert token1 is not None and token2 is not None
        n = len(token1)
        if d + n > len(diff):
            return None
        positions = diff[d : d + n]
        if bytes(first[p] for p in positions) != token1.encode() or bytes(second[p] for p in positions) != (
            token2.encode()
        ):
            return None
        # Runs of adjacent positions become one slice of the token.
        run_start = 0
        for k in range(1, n + 1):
            if k == n or positions[k] != positions[k - 1] + 1:
                start = positions[run_start]
                if start > last:
                    pieces.append(first[last:start])
                pieces.append((index, run_start, k))
                last = positions[k - 1] + 1
                run_start = k
        d += n
    if last < len(first):
        pieces.append(first[last:])
    return Template(keys=keys, lengths=tuple(lengths), pieces=tuple(pieces))


def _differences(a: bytes, b: bytes) -> list[int]:
    """Offsets where equal-length *a* and *b* differ (few, in a long string: split and compare in C)."""
    found: list[int] = []

    def walk(lo: int, hi: int) -> None:
        if a[lo:hi] == b[lo:hi]:
            return
        if hi - lo <= 64:
            found.extend(i for i in range(lo, hi) if a[i] != b[i])
            return
        mid = (lo + hi) // 2
        walk(lo, mid)
        walk(mid, hi)

    walk(0, len(a))
    return found
