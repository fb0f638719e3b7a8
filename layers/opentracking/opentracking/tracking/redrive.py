"""The spill queue's consumer: verify and write the opens (and clicks) the pixel (and the click redirect)
could not write. The write has the same key the pixel would have used, so an open written twice is
still one item."""

from __future__ import annotations

from opentracking.core.config import settings
from opentracking.core.metric_names import Metric
from opentracking.core.observability import count
from opentracking.storage import raw_events
from opentracking.tracking import clicks, pixel, tokens


def redrive(body: str) -> None:
    """One spilled open or click. A forged token stays unrecorded, as on the reader's path; a write that
    fails raises, so the queue delivers the message again."""
    config = settings()
    request = pixel.from_spill(body)
    keyring = tokens.load_keyring(config.token_secret_name)
    if request.kind == "click":
        try:
            click = tokens.verify_click_token(keyring, request.token)
        except tokens.InvalidToken:
            count(Metric.INVALID_CLICK_TOKEN)
            return
        item = clicks.item_for(request, click, config.event_retention_days)
        raw_events.put(config.table_name, item, profile="default")
        count(Metric.CLICK_REDRIVEN)
        return
    try:
        claims = tokens.verify_token(keyring, request.token)
    except tokens.InvalidToken:
        count(Metric.INVALID_TOKEN)
        return
    raw_events.put(
        config.table_name, pixel.item_for(request, claims, config.event_retention_days), profile="default"
    )
    count(Metric.OPEN_REDRIVEN)
