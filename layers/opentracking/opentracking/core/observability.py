"""The Powertools singletons every function shares (service name and namespace come from the template).

The tracer lives in `opentracking.core.tracing`, not here: building it loads the X-Ray SDK and its own AWS
clients, which the pixel (untraced, the hot path) must not pay for at cold start.
"""

import warnings

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from opentracking.core.metric_names import Metric

# A request that fails authentication or validation publishes no metric; that is not worth a warning.
warnings.filterwarnings("ignore", message="No application metrics to publish")

logger = Logger()
metrics = Metrics()


def count(metric: Metric, value: int = 1) -> None:
    """Add `value` to a metric of this invocation (every metric of ours is a count)."""
    metrics.add_metric(name=metric, unit=MetricUnit.Count, value=value)
