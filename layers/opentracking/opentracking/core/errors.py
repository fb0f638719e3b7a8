"""Domain exceptions. `opentracking.http.gateway` maps them to Mailgun's status codes and JSON error shape."""


class OpenTrackingError(Exception):
    """Base class: `message` is safe to show to the API client."""

    status = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(OpenTrackingError):
    """The client sent something Mailgun would reject (400)."""

    status = 400


class NotFound(OpenTrackingError):
    """Unknown domain or resource (404)."""

    status = 404


class PayloadTooLarge(OpenTrackingError):
    """The message is over a documented size limit (413, as Mailgun answers oversize messages)."""

    status = 413


class StorageUnavailable(OpenTrackingError):
    """S3 or DynamoDB failed after retries; nothing was stored and the client may retry (503)."""

    status = 503
