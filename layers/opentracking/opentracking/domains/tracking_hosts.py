"""HTTPS for every tracking host: an ACM certificate and an API Gateway custom domain per sending domain.

A pixel URL lives on the customer's host `<web_prefix>.<domain>`, a CNAME to us. API Gateway answers TLS
only for names it holds a certificate for, so a CNAME to one shared hostname fails in every mail client.
Like Mailgun, we get a certificate through DNS: ACM issues one for the tracking host once the customer
publishes ACM's validation CNAME, then an API Gateway regional custom domain serves that name and an API
mapping routes it to our HTTP API. The custom domain's target hostname (`d-….execute-api.<region>…`) is
the value the tracking CNAME must point at.

The state machine, advanced by `advance` (called on create, `verify` and every scheduled check):

    not_requested ─► certificate_pending ─► certificate_issued ─► target_unknown ─► mapped ─► ready
                        │                                          (API Gateway has not (CNAME     (CNAME
                        ▼                                           reported a target)  unchecked   valid)
                     certificate_failed / certificate_expired                           or wrong)

Every AWS call is idempotent and safe to retry: the certificate request carries an idempotency token,
"already exists" answers are read back, "not found" answers on deletion count as done. An AWS error leaves
the state where it was with the error in `detail`; the next check tries again. Fields AWS fills but moto
may not (the custom domain's target hostname) are never invented: without them the state says unknown.

`TRACKING_HOSTS=SharedTarget` switches all of this off: every tracking host is a CNAME for one hostname
that the operator serves with TLS some other way (the local stack, or CloudFront multi-tenant
distributions; see the README).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from opentracking.core.aws import client
from opentracking.core.config import table_name
from opentracking.core.observability import logger
from opentracking.storage import keys, store

if TYPE_CHECKING:
    import dns.resolver

MODE_ENV = "TRACKING_HOSTS"
CUSTOM_DOMAINS, SHARED_TARGET = "CustomDomains", "SharedTarget"
STACK_TAG = (
    "opentracking:stack"  # every certificate and custom domain we create carries it (IAM scopes on it)
)
STAGE = "$default"
RENEWAL_WARNING_DAYS = 30


class HostState(StrEnum):
    SHARED = "shared"
    NOT_REQUESTED = "not_requested"
    CERTIFICATE_PENDING = "certificate_pending"
    CERTIFICATE_FAILED = "certificate_failed"
    CERTIFICATE_EXPIRED = "certificate_expired"
    CERTIFICATE_ISSUED = "certificate_issued"
    TARGET_UNKNOWN = "target_unknown"
    MAPPED = "mapped"
    READY = "ready"


# ACM statuses that will never turn into ISSUED by themselves: only a new certificate helps.
_DEAD_CERTIFICATE = {"FAILED", "VALIDATION_TIMED_OUT", "REVOKED", "INACTIVE"}


# What the user does next, by state (TrackingHost.next_step fills in the names).
_NEXT_STEPS = {
    HostState.SHARED: "",
    HostState.NOT_REQUESTED: (
        "No certificate has been requested for {host} yet ({detail}). It is retried on every check; "
        "{verify} retries now."
    ),
    HostState.CERTIFICATE_PENDING: (
        "Publish the certificate validation record {record} at your DNS provider. ACM issues the "
        "certificate for {host} once it sees it (usually within 30 minutes)."
    ),
    HostState.CERTIFICATE_FAILED: (
        "ACM could not issue the certificate for {host} ({status}). Check that the validation record is "
        "published and that no CAA record forbids Amazon, then {verify} to request a new certificate."
    ),
    HostState.CERTIFICATE_EXPIRED: (
        "The certificate for {host} expired because ACM could not renew it. Restore the validation record "
        "{record}, then {verify} to request a new one."
    ),
    HostState.CERTIFICATE_ISSUED: (
        "The certificate is issued; the custom domain for {host} could not be created yet ({detail}). "
        "It is retried on every check."
    ),
    HostState.TARGET_UNKNOWN: (
        "The custom domain for {host} exists, but API Gateway has not reported its target hostname yet, "
        "so the tracking CNAME's value is unknown. It is read again on every check."
    ),
    HostState.MAPPED: "Point the CNAME {host} at {target}, then {verify}.{renewal}",
    HostState.READY: "{host} serves HTTPS with its own certificate; tracking can be switched on.{renewal}",
}


def mode() -> str:
    value = os.environ.get(MODE_ENV, CUSTOM_DOMAINS).strip() or CUSTOM_DOMAINS
    if value not in (CUSTOM_DOMAINS, SHARED_TARGET):
        raise ValueError(f"{MODE_ENV} must be {CUSTOM_DOMAINS} or {SHARED_TARGET}, not {value!r}")
    return value


def _stack_name() -> str:
    return os.environ.get("STACK_NAME", "") or "opentracking"


@dataclass(frozen=True)
class TrackingHost:
    """What we provisioned for one tracking host, and where it stands. Stored on the domain record."""

    state: str = HostState.SHARED
    detail: str = ""  # the last thing that happened, in plain language (an AWS error, a missing record)
    api_id: str = ""  # the HTTP API to map (from the request that created the domain)
    certificate_arn: str = ""
    certificate_status: str = ""  # ACM's own status
    certificate_not_after: float | None = None
    renewal_status: str = ""  # ACM's RenewalSummary.RenewalStatus, when a renewal is under way
    validation_name: str = ""  # ACM's DNS validation CNAME (name → value), once ACM published it
    validation_value: str = ""
    validation_valid: str = "unknown"  # Mailgun's valid / invalid / unknown, from our DNS check
    validation_cached: list[str] = field(default_factory=list)
    validation_detail: str = ""
    custom_domain_status: str = ""  # API Gateway's DomainNameStatus
    target: str = ""  # the custom domain's target hostname, as API Gateway reports it
    hosted_zone_id: str = ""  # for Route 53 alias records instead of a CNAME
    api_mapping_id: str = ""
    # Seeds the certificate requests' idempotency tokens: a domain deleted and created again must not get
    # its deleted certificate back from ACM's one-hour idempotency window.
    request_seed: str = ""

    def to_item(self) -> dict[str, Any]:
        item = asdict(self)
        item["certificate_not_after"] = (
            None if self.certificate_not_after is None else str(self.certificate_not_after)
        )
        return item

    @classmethod
    def from_item(cls, item: dict[str, Any] | None) -> TrackingHost:
        if not item:
            return cls()
        known = {name: item[name] for name in cls.__dataclass_fields__ if name in item}
        if known.get("certificate_not_after") is not None:
            known["certificate_not_after"] = float(known["certificate_not_after"])
        known["validation_cached"] = list(known.get("validation_cached") or [])
        return cls(**known)

    @property
    def days_left(self) -> int | None:
        if self.certificate_not_after is None:
            return None
        return int((self.certificate_not_after - time.time()) // 86400)

    @property
    def serving(self) -> bool:
        """A certificate is issued and the custom domain maps the host to our API with a known target."""
        return self.state in (HostState.MAPPED, HostState.READY, HostState.SHARED)

    def next_step(self, domain: str, tracking_host: str) -> str:
        """One sentence a user can act on, for the domain API and diagnose."""
        if self.state == HostState.CERTIFICATE_PENDING and not self.validation_name:
            return "ACM has not published the validation record yet; it appears here within minutes."
        record = f"{self.validation_name} CNAME {self.validation_value}"
        verify = f"PUT /v3/domains/{domain}/verify"
        return _NEXT_STEPS[HostState(self.state)].format(
            host=tracking_host,
            verify=verify,
            record=record,
            detail=self.detail or "not tried",
            status=self.certificate_status,
            target=self.target,
            renewal=self._renewal_warning(record, verify),
        )

    def _renewal_warning(self, record: str, verify: str) -> str:
        """For an issued certificate: what stops ACM from renewing it, if anything."""
        expires = f" in {self.days_left} days." if self.days_left is not None else "."
        if self.renewal_status == "FAILED":
            return (
                f" ACM failed to renew the certificate; restore the validation record {record} and "
                f"{verify}, or HTTPS on the tracking host stops when it expires{expires}"
            )
        if self.validation_valid == "invalid":
            return (
                f" Keep the validation record {record} published: without it ACM cannot renew the "
                f"certificate and HTTPS on the tracking host stops when it expires{expires}"
            )
        return ""

    def summary(self, domain: str, tracking_host: str) -> dict[str, Any]:
        """The host's state for the domain API (beside Mailgun's fields) and the health report."""
        return {
            "state": str(self.state),
            "next_step": self.next_step(domain, tracking_host),
            "detail": self.detail,
            "certificate_status": self.certificate_status or None,
            "certificate_days_left": self.days_left,
            "custom_domain_status": self.custom_domain_status or None,
            "target": self.target or None,
            "hosted_zone_id": self.hosted_zone_id or None,
        }

    def validation_record(self) -> dict[str, Any] | None:
        """ACM's validation CNAME as Mailgun lists a DNS record."""
        if not self.certificate_arn:
            return None
        return {
            "record_type": "CNAME",
            "name": self.validation_name,
            "value": self.validation_value,
            "valid": self.validation_valid,
            "is_active": self.certificate_status == "ISSUED",
            "cached": list(self.validation_cached),
            "purpose": "certificate_validation",
            "detail": self.validation_detail
            or ("" if self.validation_name else "ACM has not published the validation record yet."),
            "certificate": {
                "status": self.certificate_status,
                "renewal_status": self.renewal_status or None,
                "days_left": self.days_left,
            },
        }


def initial() -> TrackingHost:
    if mode() == SHARED_TARGET:
        return TrackingHost(state=HostState.SHARED)
    return TrackingHost(state=HostState.NOT_REQUESTED, request_seed=secrets.token_hex(8))


def _error(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'Error')}: {error.get('Message', '')}".strip()
    return type(exc).__name__


def _code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


# --- ACM ---


def _idempotency_token(host: TrackingHost, tracking_host: str, attempt: str) -> str:
    """ACM returns the same certificate for the same token within an hour: a retried request cannot
    leave a second, orphaned certificate. ACM wants at most 32 word characters."""
    return hashlib.sha256(f"{host.request_seed}|{tracking_host}|{attempt}".encode()).hexdigest()[:32]


def _request_certificate(host: TrackingHost, tracking_host: str, *, attempt: str) -> TrackingHost:
    response = client("acm").request_certificate(
        DomainName=tracking_host,
        ValidationMethod="DNS",
        IdempotencyToken=_idempotency_token(host, tracking_host, attempt),
        Tags=[{"Key": STACK_TAG, "Value": _stack_name()}],
    )
    logger.info("certificate requested", extra={"tracking_host": tracking_host})
    return replace(
        host,
        state=HostState.CERTIFICATE_PENDING,
        detail="",
        certificate_arn=response["CertificateArn"],
        certificate_status="PENDING_VALIDATION",
        certificate_not_after=None,
        renewal_status="",
        validation_name="",
        validation_value="",
        validation_valid="unknown",
        validation_cached=[],
        validation_detail="",
    )


def _describe_certificate(host: TrackingHost) -> TrackingHost:
    certificate = client("acm").describe_certificate(CertificateArn=host.certificate_arn)["Certificate"]
    record: dict[str, Any] = {}
    for option in certificate.get("DomainValidationOptions") or []:
        record = option.get("ResourceRecord") or record  # one name, so one record
    not_after = certificate.get("NotAfter")
    return replace(
        host,
        certificate_status=certificate.get("Status", ""),
        certificate_not_after=not_after.timestamp() if hasattr(not_after, "timestamp") else None,
        renewal_status=(certificate.get("RenewalSummary") or {}).get("RenewalStatus", ""),
        validation_name=record.get("Name", "").rstrip(".").lower(),
        validation_value=record.get("Value", "").rstrip(".").lower(),
    )


def certificate_pem(host: TrackingHost) -> str:
    """The issued certificate and its chain, PEM (public data: any client sees it in the TLS handshake),
    or "" when ACM does not give it now."""
    try:
        answer = client("acm").get_certificate(CertificateArn=host.certificate_arn)
    except (ClientError, BotoCoreError):
        return ""
    return str(answer.get("Certificate", "")) + str(answer.get("CertificateChain", ""))


def _delete_certificate(arn: str) -> bool:
    """True when the certificate is gone; False when API Gateway still holds it (retried later)."""
    try:
        client("acm").delete_certificate(CertificateArn=arn)
    except ClientError as exc:
        if _code(exc) == "ResourceNotFoundException":
            return True
        if _code(exc) == "ResourceInUseException":
            return False
        raise
    return True


# --- API Gateway ---


def _custom_domain(tracking_host: str) -> dict[str, Any] | None:
    try:
        domain: dict[str, Any] = client("apigatewayv2").get_domain_name(DomainName=tracking_host)
    except ClientError as exc:
        if _code(exc) == "NotFoundException":
            return None
        raise
    return domain


def _ensure_custom_domain(host: TrackingHost, tracking_host: str) -> dict[str, Any]:
    configuration = {
        "CertificateArn": host.certificate_arn,
        "EndpointType": "REGIONAL",
        "SecurityPolicy": "TLS_1_2",
    }
    existing = _custom_domain(tracking_host)
    if existing is None:
        try:
            created: dict[str, Any] = client("apigatewayv2").create_domain_name(
                DomainName=tracking_host,
                DomainNameConfigurations=[configuration],
                Tags={STACK_TAG: _stack_name()},
            )
            return created
        except ClientError as exc:
            if _code(exc) not in ("ConflictException", "BadRequestException"):
                raise
            existing = _custom_domain(tracking_host)  # created by a concurrent run: read it back
            if existing is None:
                raise
    if (existing.get("Tags") or {}).get(STACK_TAG) != _stack_name():
        raise ClientError(
            {"Error": {"Code": "ConflictException", "Message": "the custom domain belongs to another stack"}},
            "CreateDomainName",
        )
    current = (existing.get("DomainNameConfigurations") or [{}])[0]
    if current.get("CertificateArn") != host.certificate_arn:
        # A replacement certificate (after a failure or expiry) takes over the existing custom domain.
        updated: dict[str, Any] = client("apigatewayv2").update_domain_name(
            DomainName=tracking_host, DomainNameConfigurations=[configuration]
        )
        return updated
    return existing


def _ensure_mapping(host: TrackingHost, tracking_host: str) -> str:
    api = client("apigatewayv2")
    existing = _root_mapping(api, host, tracking_host)
    if existing:
        return existing
    try:
        created: str = api.create_api_mapping(DomainName=tracking_host, ApiId=host.api_id, Stage=STAGE)[
            "ApiMappingId"
        ]
        return created
    except ClientError as exc:
        if _code(exc) != "ConflictException":
            raise
        existing = _root_mapping(api, host, tracking_host)  # created by a concurrent run
        if existing:
            return existing
        raise


def _root_mapping(api: Any, host: TrackingHost, tracking_host: str) -> str | None:
    """The id of the mapping of the tracking host's root path to our API, if there is one."""
    for mapping in api.get_api_mappings(DomainName=tracking_host).get("Items", []):
        if mapping.get("ApiId") == host.api_id and not mapping.get("ApiMappingKey"):
            return str(mapping["ApiMappingId"])
    return None


# --- the state machine ---


def advance(host: TrackingHost, tracking_host: str, *, renew: bool = False) -> TrackingHost:
    """Move one tracking host as far along as AWS allows now: its certificate, then its custom domain and
    mapping. `renew` (an explicit verify) replaces a failed or expired certificate; the scheduled checker
    only reports those, so it never loops on ACM."""
    if host.state == HostState.SHARED:
        return host
    try:
        host = _with_certificate(host, tracking_host, renew=renew)
        if host.state != HostState.CERTIFICATE_ISSUED:
            return host
        if not host.api_id:
            return replace(
                host, detail="the HTTP API to map is not known (create the domain through the API)"
            )
        return _with_custom_domain(host, tracking_host)
    except (ClientError, BotoCoreError) as exc:
        # Throttling, a quota, an outage: keep the state, say what happened, try again next time.
        logger.warning(
            "tracking host not advanced", extra={"tracking_host": tracking_host, "error": _error(exc)}
        )
        return replace(host, detail=_error(exc))


def _with_certificate(host: TrackingHost, tracking_host: str, *, renew: bool) -> TrackingHost:
    """The host with its certificate requested and described: CERTIFICATE_PENDING, _FAILED, _EXPIRED or
    _ISSUED."""
    if not host.certificate_arn:
        host = _request_certificate(host, tracking_host, attempt="first")
    try:
        host = _describe_certificate(host)
    except ClientError as exc:
        if _code(exc) != "ResourceNotFoundException":
            raise
        # Deleted behind our back: a new certificate, with a token that cannot return the old ARN.
        host = _request_certificate(host, tracking_host, attempt=f"{time.time()}")
        host = _describe_certificate(host)
    status = host.certificate_status
    if status in _DEAD_CERTIFICATE or status == "EXPIRED":
        if not renew:
            failed = HostState.CERTIFICATE_EXPIRED if status == "EXPIRED" else HostState.CERTIFICATE_FAILED
            return replace(host, state=failed, detail=f"ACM reports the certificate as {status}.")
        host = _request_certificate(host, tracking_host, attempt=f"{host.certificate_arn}|renew")
        host = _describe_certificate(host)
        status = host.certificate_status
    if status != "ISSUED":
        return replace(host, state=HostState.CERTIFICATE_PENDING, detail="")
    return replace(host, state=HostState.CERTIFICATE_ISSUED)


def _with_custom_domain(host: TrackingHost, tracking_host: str) -> TrackingHost:
    """An issued certificate's host with its API Gateway custom domain and mapping: MAPPED once API
    Gateway names the CNAME target (with_cname makes it READY when the tracking CNAME checks valid)."""
    domain_name = _ensure_custom_domain(host, tracking_host)
    mapping_id = _ensure_mapping(host, tracking_host)
    configuration = (domain_name.get("DomainNameConfigurations") or [{}])[0]
    host = replace(
        host,
        api_mapping_id=mapping_id,
        custom_domain_status=configuration.get("DomainNameStatus", ""),
        # Never invented: an emulator that leaves these out leaves the state unknown.
        target=(configuration.get("ApiGatewayDomainName") or "").rstrip(".").lower(),
        hosted_zone_id=configuration.get("HostedZoneId", ""),
        detail="",
    )
    return replace(host, state=HostState.MAPPED if host.target else HostState.TARGET_UNKNOWN)


def with_validation_check(host: TrackingHost, resolver: dns.resolver.Resolver) -> TrackingHost:
    """ACM renews a DNS-validated certificate only while its validation record stays published."""
    if not host.validation_name or not host.validation_value:
        return host
    from opentracking.domains import dns_check  # on first use: see registry.check

    result = dns_check.check_cname(host.validation_name, host.validation_value, resolver=resolver)
    return replace(
        host,
        validation_valid=result.mailgun_valid,
        validation_cached=list(result.chain[1:])
        if result.chain
        else ([result.found] if result.found else []),
        validation_detail="" if result.valid else result.detail,
    )


def with_cname(host: TrackingHost, cname_valid: str) -> TrackingHost:
    """A mapped host whose tracking CNAME checks valid is ready; one found wrong again is only mapped."""
    if host.state == HostState.MAPPED and cname_valid == "valid":
        return replace(host, state=HostState.READY)
    if host.state == HostState.READY and cname_valid == "invalid":
        return replace(host, state=HostState.MAPPED)
    return host


# --- deletion ---


def release(host: TrackingHost, tracking_host: str) -> None:
    """Remove the mapping, the custom domain and the certificate. Each step treats "not found" as done,
    so a failed delete can simply be repeated. A certificate API Gateway has not let go of yet is queued
    and deleted by a later scheduled check."""
    if host.state == HostState.SHARED or not host.certificate_arn:
        return
    api = client("apigatewayv2")
    try:
        for mapping in api.get_api_mappings(DomainName=tracking_host).get("Items", []):
            if mapping.get("ApiId") == host.api_id:
                api.delete_api_mapping(DomainName=tracking_host, ApiMappingId=mapping["ApiMappingId"])
        existing = _custom_domain(tracking_host)
        if existing is not None and (existing.get("Tags") or {}).get(STACK_TAG) == _stack_name():
            api.delete_domain_name(DomainName=tracking_host)
    except ClientError as exc:
        if _code(exc) != "NotFoundException":
            raise
    if not _delete_certificate(host.certificate_arn):
        _queue_cleanup(host.certificate_arn)


def _queue_cleanup(arn: str) -> None:
    store.put_item(
        table_name(),
        {
            "pk": keys.HOST_CLEANUP_PK,
            "sk": keys.certificate_cleanup_sk(arn),
            "type": "cleanup",
            "arn": arn,
            "at": str(time.time()),
        },
    )


# --- a changed web prefix: the old host keeps serving the pixels already sent on it ---


def retirement(
    host: TrackingHost, tracking_host: str, domain: str, *, keep_seconds: float
) -> dict[str, Any] | None:
    """The item that keeps a tracking host its domain no longer uses (its web prefix changed) until the
    copies sent with pixels on it have expired, then has it released (retry_cleanups). None when there is
    nothing of ours to release (a shared target, or no certificate yet). Written in one transaction with
    the domain's change, so a host is never both in use and due for release, nor forgotten."""
    if host.state == HostState.SHARED or not host.certificate_arn:
        return None
    return {
        "pk": keys.HOST_CLEANUP_PK,
        "sk": keys.retired_host_sk(tracking_host),
        "type": "retired_host",
        "domain": domain,
        "tracking_host": tracking_host,
        "host": host.to_item(),
        "release_after": str(time.time() + keep_seconds),
    }


def revive(tracking_host: str) -> TrackingHost | None:
    """A retired host taken back into use (the prefix changed back): its certificate and custom domain
    serve again, and nothing releases them. None when the host was never retired."""
    key = {"pk": keys.HOST_CLEANUP_PK, "sk": keys.retired_host_sk(tracking_host)}
    item = store.get_item(table_name(), key)
    if item is None:
        return None
    store.delete_item(table_name(), key)
    return TrackingHost.from_item(item.get("host"))


def release_retired(*, domain: str | None = None, now: float | None = None) -> None:
    """Release the retired hosts that are due (`now` past their time), or every one of `domain` (deleted)."""
    for item in store.query_prefix(table_name(), keys.HOST_CLEANUP_PK, keys.RETIRED_HOST_PREFIX):
        due = float(item["release_after"]) <= (time.time() if now is None else now)
        if (domain is None and not due) or (domain is not None and item.get("domain") != domain):
            continue
        try:
            release(TrackingHost.from_item(item.get("host")), item["tracking_host"])
        except (ClientError, BotoCoreError) as exc:
            logger.warning("retired tracking host not released", extra={"error": _error(exc)})
            continue  # tried again at the next check
        store.delete_item(table_name(), {"pk": keys.HOST_CLEANUP_PK, "sk": item["sk"]})


def retry_cleanups() -> int:
    """Delete certificates left behind by deleted domains and release retired hosts that are due; returns
    how many certificates are still waiting."""
    release_retired()
    waiting = 0
    for item in store.query_prefix(table_name(), keys.HOST_CLEANUP_PK, keys.CERTIFICATE_PREFIX):
        try:
            done = _delete_certificate(item["arn"])
        except (ClientError, BotoCoreError) as exc:
            logger.warning("certificate cleanup failed", extra={"error": _error(exc)})
            done = False
        if done:
            store.delete_item(table_name(), {"pk": keys.HOST_CLEANUP_PK, "sk": item["sk"]})
        else:
            waiting += 1
    return waiting
