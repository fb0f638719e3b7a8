"""The Powertools singletons every function shares (service name and namespace come from the template).

The tracer lives in `opentracking.tracing`, not here: building it loads the X-Ray SDK and its own AWS
clients, which the pixel (untraced, the hot path) must not pay for at cold start.
"""

import warnings

from aws_lambda_powertools import Logger, Metrics

# A request that fails authentication or validation publishes no metric; that is not worth a warning.
warnings.filterwarnings("ignore", message="No application metrics to publish")

logger = Logger()
metrics = Metrics()
