"""The scheduled tracking-DNS health check: every domain's tracking CNAME, checked concurrently.

Each run records every domain's state (Mailgun's valid/invalid/unknown, the chain DNS answered, the check
time), logs and counts transitions (a CNAME that broke stops pixel injection for that domain; one that
recovered resumes it), emits EMF metrics per domain and in total, and writes a JSON report to S3.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit, single_metric

from opentracking.core.errors import NotFound
from opentracking.core.metric_names import Metric
from opentracking.core.observability import count, logger, metrics
from opentracking.domains import https_check, registry, tracking_hosts
from opentracking.storage import store

REPORT_PREFIX = "health"


@dataclass(frozen=True)
class DomainHealth:
    before: registry.Domain
    after: registry.Domain

    @property
    def transition(self) -> str | None:
        if self.before.tracking_ready and not self.after.tracking_ready:
            return "broke"
        if not self.before.tracking_ready and self.after.tracking_ready:
            return "recovered"
        return None

    @property
    def unhealthy(self) -> bool:
        """Open tracking is switched on but pixels are not being added: what the alarm is about."""
        return self.after.open_tracking and not self.after.tracking_ready

    def as_dict(self) -> dict[str, Any]:
        return {
            "domain": self.after.name,
            "tracking_host": self.after.tracking_host,
            "expected": self.after.cname_target,
            "valid": self.after.cname_valid,
            "status": self.after.cname_status,
            "cached": self.after.cname_found,
            "detail": self.after.cname_detail,
            "open_tracking": self.after.open_tracking,
            "injecting": self.after.tracking_ready,
            "transition": self.transition,
            "https": {
                "status": self.after.https_status,
                "days_left": self.after.cert_days_left,
                "detail": self.after.https_detail,
            },
            "host": self.after.host.summary(self.after.name, self.after.tracking_host),
            "sending_records": [record.mailgun() for record in self.after.identity.records],
            "sending_records_invalid": [record.name for record in self.after.identity.invalid],
            "checked_at": self.after.cname_checked_at,
        }


def check_all(bucket: str, *, max_workers: int = 16) -> dict[str, Any]:
    started = time.time()
    current, _total = registry.list_domains(limit=10**9)
    # Each domain: its certificate and custom domain advanced, its validation and tracking CNAMEs checked.
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(current)))) as pool:
        checked = list(pool.map(registry.check, current))
    checked = _with_https(checked, max_workers=max_workers)
    certificates_waiting = tracking_hosts.retry_cleanups()
    results: list[DomainHealth] = []
    for domain, after in zip(current, checked, strict=True):
        health = DomainHealth(before=domain, after=after)
        try:
            registry.save(health.after)
        except NotFound:
            continue  # deleted while we were checking it
        results.append(health)
        _record(health)

    totals = {
        "checked": len(results),
        "valid": sum(h.after.cname_valid == "valid" for h in results),
        "invalid": sum(h.after.cname_valid == "invalid" for h in results),
        "unknown": sum(h.after.cname_valid == "unknown" for h in results),
        "unhealthy": sum(h.unhealthy for h in results),
        "broke": sum(h.transition == "broke" for h in results),
        "recovered": sum(h.transition == "recovered" for h in results),
        "https_broken": sum(h.after.https_status not in (None, "ok", "expiring") for h in results),
        "hosts_not_serving": sum(not h.after.host.serving for h in results),
        "validation_records_missing": sum(h.after.host.validation_valid == "invalid" for h in results),
        # SPF, DKIM or MAIL FROM records DNS answered for without the value the sending identity needs
        "sending_records_invalid": sum(len(h.after.identity.invalid) for h in results),
        "certificates_awaiting_deletion": certificates_waiting,
    }
    count(Metric.DOMAINS_CHECKED, totals["checked"])
    count(Metric.DOMAINS_CNAME_INVALID, totals["invalid"])
    count(Metric.DOMAINS_CNAME_UNKNOWN, totals["unknown"])
    count(Metric.TRACKING_DOMAINS_UNHEALTHY, totals["unhealthy"])
    count(Metric.CNAME_BROKE, totals["broke"])
    count(Metric.CNAME_RECOVERED, totals["recovered"])
    count(Metric.DOMAINS_HTTPS_BROKEN, totals["https_broken"])
    count(Metric.TRACKING_HOSTS_NOT_SERVING, totals["hosts_not_serving"])
    count(Metric.VALIDATION_RECORDS_MISSING, totals["validation_records_missing"])
    count(Metric.SENDING_RECORDS_INVALID, totals["sending_records_invalid"])

    finished = datetime.now(UTC)
    report = {
        "started_at": started,
        "finished_at": finished.timestamp(),
        "totals": totals,
        "domains": [health.as_dict() for health in results],
    }
    key = f"{REPORT_PREFIX}/{finished:%Y/%m/%d/%H%M%S}.json"
    store.put_json(bucket, key, report)
    store.put_json(bucket, f"{REPORT_PREFIX}/latest.json", report)
    logger.info("tracking DNS checked", extra={"totals": totals, "report": key})
    return {"report": key, "totals": totals}


def _with_https(checked: list[registry.Domain], *, max_workers: int) -> list[registry.Domain]:
    """The certificate each tracking host serves (the seed's HTTPS failure mode), for hosts whose CNAME
    is valid: a host that does not resolve to us has nothing of ours to check."""

    def one(domain: registry.Domain) -> registry.Domain:
        if domain.cname_valid != "valid":
            return replace(domain, https_status=None, https_detail=None, cert_days_left=None)
        result = https_check.check_https(domain.tracking_host)
        return replace(
            domain,
            https_status=str(result.status),
            https_detail=result.detail,
            cert_days_left=result.days_left,
        )

    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(checked)))) as pool:
        return list(pool.map(one, checked))


def _record(health: DomainHealth) -> None:
    domain = health.after
    broken_before = {record.name + record.record_type for record in health.before.identity.invalid}
    for record in domain.identity.invalid:
        if record.name + record.record_type not in broken_before:
            # Domains and record names are the customer's own, not personal data: safe to log.
            logger.warning(
                "sending record broke",
                extra={
                    "domain": domain.name,
                    "record": record.name,
                    "type": record.record_type,
                    "detail": record.detail,
                },
            )
    if health.transition:
        # Domains are the customer's own names, not personal data: safe to log.
        logger.warning(
            f"tracking CNAME {health.transition}",
            extra={"domain": domain.name, "status": domain.cname_status, "detail": domain.cname_detail},
        )
    if domain.cert_days_left is not None:
        with single_metric(
            name=Metric.TRACKING_CERT_DAYS_LEFT,
            unit=MetricUnit.Count,
            value=domain.cert_days_left,
            namespace=metrics.namespace,
        ) as metric:
            metric.add_dimension(name="domain", value=domain.name)
    with single_metric(
        name=Metric.TRACKING_CNAME_VALID,
        unit=MetricUnit.Count,
        value=1 if domain.cname_valid == "valid" else 0,
        namespace=metrics.namespace,
    ) as metric:
        metric.add_dimension(name="domain", value=domain.name)
