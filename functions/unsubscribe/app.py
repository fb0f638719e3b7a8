"""GET|POST /u/{token}: a copy's unsubscribe link (Mailgun's unsubscribe tracking, RFC 8058's one-click).

No resolver and no API key, like the pixel and the click redirect: the reader's mail client or mailbox
provider calls it. The library does the work; see `opentracking.tracking.unsubscribes`.
"""

from aws_lambda_powertools.utilities.typing import LambdaContext

from opentracking.core.observability import metrics
from opentracking.tracking import unsubscribes


@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return unsubscribes.handle(event)
