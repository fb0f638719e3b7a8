"""The Powertools singletons every function shares (service name and namespace come from the template)."""

import warnings

from aws_lambda_powertools import Logger, Metrics, Tracer

# A request that fails authentication or validation publishes no metric; that is not worth a warning.
warnings.filterwarnings("ignore", message="No application metrics to publish")

logger = Logger()
tracer = Tracer()
metrics = Metrics()
