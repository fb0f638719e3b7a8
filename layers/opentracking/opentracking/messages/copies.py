"""A recipient's copy as it is sent: its own S3 object, or rendered from its message's template.

Store once, render on read. A tracked message to many recipients (the template path of the submission:
one message for all, at least SPLICE_MIN_COPIES tracked copies) is stored once, as its template: the
tracked bytes with holes for each copy's tokens (`mail.splice`), in one S3 object that every copy record
of the message names (`template: true`). A copy is rendered when it is read (by the sender as it sends
it, by `diagnose`): its tokens sealed again from its copy id and spliced in. Tokens are HMACs of the copy
id, the domain and the privacy flags under a key id, so the same inputs give the same token: the copy is
byte for byte the one the submission planned and checked (the template is trusted only once it reproduced
a real copy, and the key id the submission used is kept with the template and used while the ring still
holds it). Measured: 0.007 ms to render a copy, against 0.5 ms of CPU for the PutObject of each copy at
submission and 0.47 ms for its GetObject at sending (PERFORMANCE.md).

Every other copy has an object of its own, read as it is: a message with recipient-variables, with fewer
copies, untracked, a recipient on the tracking suppression list, or a copy whose token did not fit.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from threading import Lock
from typing import Any

from opentracking.core.config import settings
from opentracking.mail import splice
from opentracking.storage import keys, store
from opentracking.tracking import tokens

# A sender's batch is usually one message's copies: its template is read once. Kept by size, not count: a
# message may be 25 MB, and the sender has 256 MB.
CACHED_TEMPLATE_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class TokenSource:
    """How a message's copies get their tokens: the domain, its privacy flags, the key id."""

    keyring: tokens.KeyRing
    domain: str
    anonymize_ip: bool
    retention_days: int | None
    key_id: int | None = None

    def for_copy(self, copy_id: bytes) -> splice.TokenFor:
        """One copy's tokens by key: ("open",) for its pixel, ("click", url) for a link (None: a URL too
        long to seal, whose link stays as it was)."""

        def token_for(key: Hashable) -> str | None:
            if key == ("open",):
                return tokens.issue_token(
                    self.keyring,
                    copy_id,
                    self.domain,
                    anonymize_ip=self.anonymize_ip,
                    retention_days=self.retention_days,
                    key_id=self.key_id,
                )
            assert isinstance(key, tuple) and len(key) == 2 and key[0] == "click"
            try:
                return tokens.issue_click_token(
                    self.keyring,
                    copy_id,
                    self.domain,
                    key[1],
                    anonymize_ip=self.anonymize_ip,
                    retention_days=self.retention_days,
                    key_id=self.key_id,
                )
            except ValueError:
                return None

        return token_for

    def params(self) -> dict[str, Any]:
        """What the template keeps of this source (never a key)."""
        return {
            "domain": self.domain,
            "anonymize_ip": self.anonymize_ip,
            "retention_days": self.retention_days,
            "key_id": self.keyring.signing_key_id(self.key_id),
        }

    @classmethod
    def from_params(cls, keyring: tokens.KeyRing, params: dict[str, Any]) -> TokenSource:
        retention = params.get("retention_days")
        return cls(
            keyring,
            str(params["domain"]),
            bool(params.get("anonymize_ip")),
            None if retention is None else int(retention),
            None if params.get("key_id") is None else int(params["key_id"]),
        )


def encode_template(template: splice.Template, source: TokenSource) -> bytes:
    return template.encode(source.params())


Planned = tuple[splice.Template, dict[str, Any]]  # a message's template, decoded, and its params


def render(stored: bytes, copy_pk: str, keyring: tokens.KeyRing) -> bytes:
    """The copy's bytes from what is stored for it: its own copy as it is, or its message's template
    with its tokens. ValueError for a template that does not take the copy's tokens (corrupt)."""
    if not splice.is_template(stored):
        return stored
    return _fill(splice.Template.decode(stored), copy_pk, keyring)


def _fill(planned: Planned, copy_pk: str, keyring: tokens.KeyRing) -> bytes:
    template, params = planned
    token_for = TokenSource.from_params(keyring, params).for_copy(keys.copy_id_of(copy_pk))
    rendered = template.fill([token_for(key) for key in template.keys])
    if rendered is None:
        raise ValueError("the message's template does not take this copy's tokens")
    return rendered


_templates: OrderedDict[str, tuple[Planned, int]] = OrderedDict()  # key -> (decoded, stored size)
_templates_lock = Lock()


def read(copy: dict[str, Any]) -> bytes:
    """The copy record's bytes as sent: its own object read from S3, or its message's template (read and
    decoded once, kept per container within CACHED_TEMPLATE_BYTES) filled with its tokens.
    store.ObjectMissing when the object is gone."""
    key = str(copy["s3_key"])
    if not copy.get("template"):
        return store.get_object(settings().bucket_name, key)
    with _templates_lock:
        cached = _templates.get(key)
        if cached is not None:
            _templates.move_to_end(key)
    if cached is None:
        stored = store.get_object(settings().bucket_name, key)
        cached = (splice.Template.decode(stored), len(stored))
        with _templates_lock:
            _templates[key] = cached
            # The newest stays; older ones go while the cache holds more than its budget.
            while (
                len(_templates) > 1 and sum(size for _, size in _templates.values()) > CACHED_TEMPLATE_BYTES
            ):
                _templates.popitem(last=False)
    planned = cached[0]
    return _fill(planned, str(copy["pk"]), tokens.load_keyring(settings().token_secret_name))


def _cached_bytes() -> int:
    return sum(size for _, size in _templates.values())


def reset_cache() -> None:
    with _templates_lock:
        _templates.clear()
