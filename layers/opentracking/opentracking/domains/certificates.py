"""Mailgun's tracking certificate API (`/v2/x509/{domain}`), mapped onto the tracking host state machine.

Mailgun issues the tracking host's certificate with Let's Encrypt; here ACM issues it through DNS
(tracking_hosts). The API's words map onto that machine: `generate` requests the first certificate,
`regenerate` replaces one that failed or expired (an explicit verify), and `status` reads where it stands:

    processing  requested, waiting for the validation record, or the custom domain not serving yet
    active      issued and served on the tracking host
    expired     ACM could not renew it
    error       ACM could not issue it (`error` says why)

The path names the tracking host (`email.example.com`, as Mailgun's SDKs send it) or the sending domain.
With `TrackingHosts=SharedTarget` the operator serves every tracking host with a certificate of their own:
`status` reports what the scheduled HTTPS check saw, and `generate` and `regenerate` check the host's
records again (202, saying there is nothing of its own to generate).
"""

from __future__ import annotations

from typing import Any

from opentracking.core.errors import NotFound, OpenTrackingError
from opentracking.domains import registry, tracking_hosts
from opentracking.domains.tracking_hosts import HostState

GENERATED = "Initiated x509 key pair generation"
_PROCESSING = {
    HostState.NOT_REQUESTED,
    HostState.CERTIFICATE_PENDING,
    HostState.CERTIFICATE_ISSUED,
    HostState.TARGET_UNKNOWN,
}


class Conflict(OpenTrackingError):
    status = 409


def find(name: str) -> registry.Domain:
    """The domain a /v2/x509 path names: its tracking host (`<web_prefix>.<domain>`) or the domain itself."""
    text = name.strip().rstrip(".").lower()
    try:
        return registry.get(text)
    except NotFound:
        prefix, _, rest = text.partition(".")
        if rest:
            try:
                domain = registry.get(rest)
            except NotFound:
                pass
            else:
                if domain.web_prefix == prefix:
                    return domain
    raise NotFound(f"Domain not found: {name}")


def status(name: str) -> dict[str, Any]:
    """GET /v2/x509/{domain}/status: {status, error, certificate}."""
    domain = find(name)
    host = domain.host
    if host.state == HostState.SHARED:
        if domain.https_status in ("ok", "expiring"):
            return {"status": "active", "error": "", "certificate": ""}
        if domain.https_status is None:
            return {"status": "processing", "error": "not checked yet", "certificate": ""}
        return {"status": "error", "error": domain.https_detail or domain.https_status, "certificate": ""}
    step = host.next_step(domain.name, domain.tracking_host)
    if host.state in (HostState.MAPPED, HostState.READY):
        return {"status": "active", "error": "", "certificate": tracking_hosts.certificate_pem(host)}
    if host.state == HostState.CERTIFICATE_EXPIRED:
        return {"status": "expired", "error": f"x509 certificate has expired. {step}", "certificate": ""}
    if host.state == HostState.CERTIFICATE_FAILED:
        return {"status": "error", "error": step, "certificate": ""}
    return {"status": "processing", "error": step, "certificate": ""}


def _started(domain: registry.Domain) -> dict[str, Any]:
    return {"message": GENERATED, "location": f"/v2/x509/{domain.tracking_host}/status"}


SHARED = (
    "This deployment serves every tracking host with its operator's certificate "
    "(TrackingHosts=SharedTarget): there is no certificate of its own to generate. The host's records were "
    "checked again; its status is at the location below"
)


def _shared(domain: registry.Domain) -> dict[str, Any] | None:
    """With a shared target, generating means checking again what serves the host (202, and why)."""
    if domain.host.state != HostState.SHARED:
        return None
    registry.verify(domain.name)
    return {**_started(domain), "message": SHARED}


def generate(name: str) -> dict[str, Any]:
    """POST /v2/x509/{domain}: request the tracking host's certificate (202), if it has none yet."""
    domain = find(name)
    shared = _shared(domain)
    if shared:
        return shared
    if domain.host.state != HostState.NOT_REQUESTED:
        raise Conflict(
            f"{domain.tracking_host} already has a certificate ({domain.host.state}); "
            "PUT /v2/x509/{domain} replaces one that failed or expired"
        )
    registry.save(registry.check(domain))
    return _started(domain)


def regenerate(name: str) -> dict[str, Any]:
    """PUT /v2/x509/{domain}: replace a certificate that failed or expired (202); a valid one stays."""
    domain = find(name)
    shared = _shared(domain)
    if shared:
        return shared
    if domain.host.state not in (HostState.CERTIFICATE_FAILED, HostState.CERTIFICATE_EXPIRED):
        still = "is still valid" if domain.host.state not in _PROCESSING else "is being issued"
        raise Conflict(f"The certificate of {domain.tracking_host} {still}: it is not regenerated")
    registry.verify(domain.name)
    return _started(domain)
