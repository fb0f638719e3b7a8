"""The table's keys that more than one module builds, written once (the single-table layout that
DESIGN.md documents: a domain's partition holds its record, webhooks and settings; a copy's partition
holds its record, raw opens and clicks, events and unique markers)."""

from __future__ import annotations

DOMAIN_SK = "DOMAIN"
WEBHOOK_PREFIX = "WEBHOOK#"


def domain_pk(name: str) -> str:
    return f"DOMAIN#{name}"


def domain_key(name: str) -> dict[str, str]:
    """The domain's own record."""
    return {"pk": domain_pk(name), "sk": DOMAIN_SK}


def webhook_sk(webhook_id: str) -> str:
    return f"{WEBHOOK_PREFIX}{webhook_id}"


def copy_pk(copy_id_hex: str) -> str:
    """One recipient's copy of a message (the id is the token's copy id, in hex)."""
    return f"COPY#{copy_id_hex}"


def message_pk(submission_id: str) -> str:
    return f"MSG#{submission_id}"
