"""The pixel's and the redirect's one write, kept apart from `storage.store` so that the reader's hot path
imports (and, where bytecode is not cached, compiles) no more than this: one PutItem of an item already in
DynamoDB's wire format, no reads, no serializer. Errors are not translated: the caller spills the open."""

from __future__ import annotations

from typing import Any

from opentracking.core.aws import client


def put(table_name: str, item: dict[str, Any], *, profile: str = "pixel") -> None:
    """A raw open or click. On the reader's path it is retried within the pixel's small budget (the
    "pixel" client profile, see opentracking.core.aws); the redrive uses the default one."""
    client("dynamodb", profile).put_item(TableName=table_name, Item=item)
