"""opentracking: self-hosted, Mailgun-compatible email open tracking.

The package is shared by every function through the Lambda layer. Handlers stay thin: they parse the
trigger, call into this package and shape the response.
"""
