"""The webhook signing key through the API, as Mailgun gives it: `GET /v5/accounts/http_signing_key` reads
it and `POST` regenerates it. Receivers verify each webhook's signature with it (`delivery.sign`), so a user
of `make run` or of a deployed stack reads it here instead of in Secrets Manager. Account keys only: a
sending key may only send (`http.auth`)."""

from __future__ import annotations

import json
import os
import secrets
import string

from botocore.exceptions import BotoCoreError, ClientError

from opentracking.core.aws import client
from opentracking.core.errors import StorageUnavailable
from opentracking.webhooks.delivery import ConfigurationError, key_in_secret

KEY_LENGTH = 50  # as template.yaml generates the first one
_ALPHABET = string.ascii_letters + string.digits


def secret_name() -> str:
    name = os.environ.get("WEBHOOK_SIGNING_KEY_SECRET", "").strip()
    if not name:
        raise ConfigurationError("environment variable WEBHOOK_SIGNING_KEY_SECRET is not set")
    return name


def current() -> dict[str, str]:
    """The key now (read, not cached: a key just regenerated is the one shown)."""
    try:
        secret = client("secretsmanager").get_secret_value(SecretId=secret_name())["SecretString"]
    except (BotoCoreError, ClientError) as exc:
        raise StorageUnavailable("The signing key cannot be read now, please retry") from exc
    return {"http_signing_key": key_in_secret(secret)}


def regenerate() -> dict[str, str]:
    """A new random key replaces the old one; webhooks are signed with it from the senders' next read."""
    key = "".join(secrets.choice(_ALPHABET) for _ in range(KEY_LENGTH))
    try:
        client("secretsmanager").put_secret_value(
            SecretId=secret_name(), SecretString=json.dumps({"key": key})
        )
    except (BotoCoreError, ClientError) as exc:
        raise StorageUnavailable("The signing key cannot be changed now, please retry") from exc
    return {"message": "The webhook signing key has been regenerated", "http_signing_key": key}
