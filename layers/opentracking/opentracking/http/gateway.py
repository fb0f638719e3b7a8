"""What every API function shares: Mailgun's error shape, request bodies, and idempotent submission.

This module owns the mapping of domain exceptions to HTTP status codes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from functools import cache
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyPersistenceLayerError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from opentracking.core.aws import client
from opentracking.core.config import settings
from opentracking.core.errors import BadRequest, OpenTrackingError
from opentracking.core.observability import logger
from opentracking.http import auth
from opentracking.http.forms import Form, parse_form
from opentracking.storage import keys

IDEMPOTENCY_HEADER = "idempotency-key"
IDEMPOTENCY_TTL_SECONDS = 24 * 3600
_IDEMPOTENCY_CONFIG = IdempotencyConfig(
    event_key_jmespath="key",
    payload_validation_jmespath="fingerprint",
    raise_on_no_idempotency_key=False,
    expires_after_seconds=IDEMPOTENCY_TTL_SECONDS,
)


def error(status: int, message: str) -> Response[Any]:
    return Response(
        status_code=status, content_type=content_types.APPLICATION_JSON, body={"message": message}
    )


def register_error_handlers(app: APIGatewayHttpResolver) -> None:
    @app.exception_handler(OpenTrackingError)
    def handle_domain_error(exc: OpenTrackingError) -> Response[Any]:
        if exc.status >= 500:
            logger.warning("request failed", extra={"error": type(exc).__name__, "status": exc.status})
        return error(exc.status, exc.message)

    @app.exception_handler(IdempotencyValidationError)
    def handle_key_reuse(_exc: IdempotencyValidationError) -> Response[Any]:
        return error(400, "This Idempotency-Key was already used with a different request")

    @app.exception_handler(IdempotencyAlreadyInProgressError)
    def handle_in_progress(_exc: IdempotencyAlreadyInProgressError) -> Response[Any]:
        return error(409, "A request with this Idempotency-Key is still being processed, retry shortly")

    @app.exception_handler(IdempotencyPersistenceLayerError)
    def handle_idempotency_store(_exc: IdempotencyPersistenceLayerError) -> Response[Any]:
        return error(503, "The idempotency store is unavailable, please retry")

    @app.not_found
    def handle_not_found(_exc: Exception) -> Response[Any]:
        return error(404, "Not Found")

    @app.exception_handler(Exception)
    def handle_unexpected(exc: Exception) -> Response[Any]:
        # Never a stack trace or input in the response; the log has the exception type and trace.
        logger.exception("unhandled error", extra={"error": type(exc).__name__})
        return error(500, "Internal server error")


def require_api_key(app: APIGatewayHttpResolver, next_middleware: NextMiddleware) -> Response[Any]:
    """Powertools middleware: every route of a resolver that uses it needs a valid API key, and a domain
    sending key only reaches the sending routes of its own domain."""
    event = app.current_event
    config = settings()
    try:
        principal = auth.authenticate(
            event.headers.get("authorization"), config.api_keys_secret_name, config.table_name
        )
        principal.authorize(event.request_context.http.method, event.raw_path)
    except auth.Unauthorized as exc:
        response = error(401, exc.message)
        response.headers["WWW-Authenticate"] = 'Basic realm="MG API"'
        return response
    except auth.Forbidden as exc:
        return error(403, exc.message)
    return next_middleware(app)


def raw_body(event: APIGatewayProxyEventV2) -> bytes:
    body = event.body or ""
    if event.is_base64_encoded:
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadRequest("The request body is not valid base64") from exc
    return body.encode("utf-8", "surrogateescape")


def resolver() -> APIGatewayHttpResolver:
    """An API function's resolver: a valid API key on every route, and Mailgun's error shape."""
    app = APIGatewayHttpResolver()
    app.use(middlewares=[require_api_key])
    register_error_handlers(app)
    return app


def base_url(event: APIGatewayProxyEventV2) -> str:
    """Where paging URLs point: the scheme and host the client called."""
    return f"{event.headers.get('x-forwarded-proto', 'https')}://{event.headers.get('host', '')}"


def api_base_url(event: APIGatewayProxyEventV2) -> str:
    """This API's own address, for URLs stored for others to call (an event's `storage.url`): the domain
    API Gateway served the request on, never the client's Host header, which a sending key's holder could
    point at a host of theirs to collect the account key of whoever follows the URL."""
    scheme = event.headers.get("x-forwarded-proto", "https")
    return f"{scheme if scheme in ('http', 'https') else 'https'}://{event.request_context.domain_name}"


def request_form(event: APIGatewayProxyEventV2) -> Form:
    """The form fields of a management request (an empty form when there is no body)."""
    body = raw_body(event)
    return parse_form(event.headers.get("content-type"), body) if body else Form()


def idempotency_request(event: APIGatewayProxyEventV2, body: bytes) -> dict[str, Any]:
    """The data Powertools keys on: the client's Idempotency-Key scoped to the route, and a fingerprint
    of the body so the same key with a different message is refused instead of silently replayed."""
    key = (event.headers or {}).get(IDEMPOTENCY_HEADER)
    if key is not None:
        key = key.strip()
        if not key or len(key) > 255:
            raise BadRequest("Idempotency-Key must be 1 to 255 characters")
    return {
        "key": f"{event.raw_path}#{key}" if key else None,
        "fingerprint": hashlib.sha256(body).hexdigest(),
    }


@cache
def _persistence(table_name: str) -> DynamoDBPersistenceLayer:
    return DynamoDBPersistenceLayer(
        table_name=table_name,
        key_attr="pk",
        sort_key_attr="sk",
        static_pk_value=keys.IDEMPOTENCY_PK,
        expiry_attr="expires_at",
        boto3_client=client("dynamodb"),
    )


def run_idempotently(
    table_name: str, request: dict[str, Any], function: Callable[..., Any], **kwargs: Any
) -> Any:
    """Call function(request=request, **kwargs) at most once per idempotency key (Powertools)."""
    wrapped = idempotent_function(
        data_keyword_argument="request",
        persistence_store=_persistence(table_name),
        config=_IDEMPOTENCY_CONFIG,
    )(function)
    return wrapped(request=request, **kwargs)


def register_lambda_context(context: LambdaContext) -> None:
    """Lets idempotency records expire with the invocation if it times out mid-way."""
    _IDEMPOTENCY_CONFIG.register_lambda_context(context)


def reset_cache() -> None:
    _persistence.cache_clear()
