"""Every key of the single table, written once (tests/unit/test_layer_shape.py holds the rest of the layer
to that: no other module writes a key prefix).

The layout, by partition:
- `DOMAIN#{domain}`: the domain's record (`DOMAIN`), its webhooks (`WEBHOOK#{type}`), settings.
- `COPY#{copy id}`: one recipient's copy (`COPY`), its raw opens and clicks (`OPEN#…`, `CLICK#…`), its
  events (`EVENT#{time}#{name}#{id}`), unique markers (`UNIQUE#opened`, `UNIQUE#clicked[#{url}]`) and the
  accepted event's counted marker (`COUNTED#{id}`).
- `MSG#{submission}`: the message record that commits a submission.
- `STATS#{domain}#{tag}#{shard}` / `H#{hour}`: hourly counters; `URLSTATS#…` / `{url key}`: clicks per URL;
  `TAGS#{domain}` / `{tag}`: the tags a domain has used.
- Others: API keys, suppressions, privacy settings, erasure's recipient index, webhook delivery markers,
  certificate clean-ups, idempotency records.

Indexes: `gsi1` lists a domain's events in time order (`EVENTS#{domain}`), a message's copies
(`COPIES#{domain}#{message id}`) and its record (`MSGID#…`); `gsi2` lists a recipient's copies (`RCPT#…`).
"""

from __future__ import annotations

DOMAIN_SK = "DOMAIN"
WEBHOOK_PREFIX = "WEBHOOK#"
COPY_SK = "COPY"
MESSAGE_SK = "MESSAGE"
OPEN_PREFIX = "OPEN#"
CLICK_PREFIX = "CLICK#"
EVENT_PREFIX = "EVENT#"
UNIQUE_OPENED_SK = "UNIQUE#opened"
UNIQUE_CLICKED_SK = "UNIQUE#clicked"
APIKEY_SK = "APIKEY"
API_KEY_LIST = "APIKEYS"  # gsi1: the list of a deployment's API keys
PRIVACY_SETTINGS_SK = "PRIVACY"  # in the domain's partition
HOST_CLEANUP_PK = "HOST_CLEANUP"  # certificates left to delete once their custom domain is gone
IDEMPOTENCY_PK = "IDEMPOTENCY#submit"
CERTIFICATE_PREFIX = "CERT#"
RETIRED_HOST_PREFIX = "RETIRED#"


# --- a domain's partition ------------------------------------------------------------------------


def domain_pk(name: str) -> str:
    return f"DOMAIN#{name}"


def domain_key(name: str) -> dict[str, str]:
    """The domain's own record."""
    return {"pk": domain_pk(name), "sk": DOMAIN_SK}


def webhook_sk(webhook_id: str) -> str:
    return f"{WEBHOOK_PREFIX}{webhook_id}"


def suppressions_pk(domain: str) -> str:
    return f"SUPPRESS#{domain}"


def suppression_list_pk(kind: str, domain: str) -> str:
    """One of Mailgun's suppression lists (bounces, complaints, unsubscribes, whitelists) of a domain;
    its items are keyed by the SHA-256 of the lower-cased address (or whitelisted domain)."""
    return f"LIST#{kind}#{domain}"


# --- a copy's partition and a message's record -----------------------------------------------------


COPY_PREFIX = "COPY#"


def copy_pk(copy_id_hex: str) -> str:
    """One recipient's copy of a message (the id is the token's copy id, in hex)."""
    return f"{COPY_PREFIX}{copy_id_hex}"


def is_copy_pk(pk: str) -> bool:
    return pk.startswith(COPY_PREFIX) and len(pk) > len(COPY_PREFIX)


def copy_id_of(pk: str) -> bytes:
    """The copy id (the tokens' copy id) from the copy's partition key."""
    return bytes.fromhex(pk.removeprefix(COPY_PREFIX))


def copy_key(pk: str) -> dict[str, str]:
    """The copy's own record, given its partition key."""
    return {"pk": pk, "sk": COPY_SK}


def message_pk(submission_id: str) -> str:
    return f"MSG#{submission_id}"


def raw_open_sk(epoch_ms: int, request_id: str) -> str:
    """A raw open in its copy's partition, in time order; a raw click is the same key as CLICK#."""
    return f"{OPEN_PREFIX}{epoch_ms:013d}#{request_id}"


def raw_click_sk(raw_open_sk: str) -> str:
    return raw_open_sk.replace(OPEN_PREFIX, CLICK_PREFIX, 1)


def event_time(timestamp: float) -> str:
    """A timestamp as a sort key: fixed width, so keys sort in time order."""
    return f"{timestamp:017.6f}"


def event_sk(timestamp: float, name: str, event_id: str) -> str:
    return f"{EVENT_PREFIX}{event_time(timestamp)}#{name}#{event_id}"


def unique_clicked_url_sk(url_key: str) -> str:
    return f"{UNIQUE_CLICKED_SK}#{url_key}"


def unsubscribed_sk(scope: str) -> str:
    """The marker that the copy's reader unsubscribed (from all mail, or from its tags): recorded once."""
    return f"UNSUBSCRIBED#{scope}"


def counted_sk(event_id: str) -> str:
    """The marker that an accepted event was counted (a replayed stream record counts nothing twice)."""
    return f"COUNTED#{event_id}"


# --- gsi1 and gsi2 ---------------------------------------------------------------------------------


def events_index_pk(domain: str) -> str:
    return f"EVENTS#{domain}"


def events_index_sk(timestamp: float, event_id: str) -> str:
    return f"{event_time(timestamp)}#{event_id}"


def copies_index_pk(domain: str, message_id: str) -> str:
    return f"COPIES#{domain}#{message_id}"


def message_index_pk(domain: str, message_id: str) -> str:
    return f"MSGID#{domain}#{message_id}"


def recipient_index_pk(domain: str, address_digest: str) -> str:
    """gsi2: every copy of one recipient in a domain, for erasure (the address is digested)."""
    return f"RCPT#{domain}#{address_digest}"


# --- read-side aggregates --------------------------------------------------------------------------


def stats_pk(domain: str, tag: str, shard: int) -> str:
    return f"STATS#{domain}#{tag}#{shard}"


def hour_sk(hour_bucket: str) -> str:
    """An hourly counter's sort key; `hour_bucket` is "%Y-%m-%dT%H" in UTC."""
    return f"H#{hour_bucket}"


def hour_of(sk: str) -> str:
    return sk.removeprefix("H#")


def url_stats_pk(domain: str, tag: str, shard: int) -> str:
    return f"URLSTATS#{domain}#{tag}#{shard}"


def tags_pk(domain: str) -> str:
    return f"TAGS#{domain}"


# --- the rest --------------------------------------------------------------------------------------


def api_key_pk(digest_hex: str) -> str:
    return f"APIKEY#{digest_hex}"


def webhook_sent_pk(event_id: str) -> str:
    """The marker that one event was delivered to a webhook URL (the URL is the sort key)."""
    return f"WEBHOOK_SENT#{event_id}"


def privacy_key(domain: str) -> dict[str, str]:
    """The domain's privacy settings."""
    return {"pk": domain_pk(domain), "sk": PRIVACY_SETTINGS_SK}


def api_key_key(digest_hex: str) -> dict[str, str]:
    return {"pk": api_key_pk(digest_hex), "sk": APIKEY_SK}


def certificate_cleanup_sk(arn: str) -> str:
    return f"{CERTIFICATE_PREFIX}{arn}"


def retired_host_sk(tracking_host: str) -> str:
    """A tracking host its domain no longer uses, kept serving until the pixels sent on it expire."""
    return f"{RETIRED_HOST_PREFIX}{tracking_host}"
