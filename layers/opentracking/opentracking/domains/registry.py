"""Sending domains, their tracking CNAME and their tracking settings, in Mailgun's shapes.

A domain's tracking host is `<web_prefix>.<domain>` and must be a CNAME for the hostname this deployment
serves tracking from (`cname_target`). Its state comes from DNS checks (the domains API's `verify` and the
scheduled checker): `cname_valid` is what Mailgun shows (valid/invalid/unknown), `tracking_ready` is the
last definitive answer. Only a definitive answer changes readiness, so a DNS timeout neither stops nor
starts pixel injection; a CNAME found missing or wrong does stop it, so no recipient sees a broken image.
"""

from __future__ import annotations

import hashlib
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from opentracking.core.config import settings, table_name
from opentracking.core.errors import BadRequest, NotFound, OpenTrackingError
from opentracking.delivery import jobs
from opentracking.domains import identity as sending_identity
from opentracking.domains import tracking_hosts
from opentracking.messages.options import optional_bool
from opentracking.storage import keys, store

if TYPE_CHECKING:
    import dns.resolver

    from opentracking.domains import dns_check

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
DEFAULT_WEB_PREFIX = "email"
# Mailgun's default unsubscribe footers (as its API returns them for a new domain).
DEFAULT_HTML_FOOTER = '\n<br>\n<p><a href="%unsubscribe_url%">unsubscribe</a></p>\n'
DEFAULT_TEXT_FOOTER = "\n\nTo unsubscribe click: <%unsubscribe_url%>\n\n"
MAX_FOOTER_CHARS = 10_000
DOMAIN_LIST_KEY = "DOMAINS"


def normalise_domain(name: str | None) -> str:
    """A valid DNS domain name, lower-case, IDNA-encoded; BadRequest otherwise."""
    text = (name or "").strip().rstrip(".").lower()
    if not text:
        raise BadRequest("'name' parameter is missing")
    try:
        ascii_name = text.encode("idna").decode("ascii")
    except UnicodeError:
        raise BadRequest(f"'{text}' is not a valid domain name") from None
    labels = ascii_name.split(".")
    if len(ascii_name) > 253 or len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise BadRequest(f"'{text}' is not a valid domain name")
    if labels[-1].isdigit():
        # No top-level domain is all digits (RFC 3696 2): this is an IPv4 address, not a sending domain.
        raise BadRequest(f"'{text}' is an IP address, not a domain name")
    return ascii_name


def normalise_web_prefix(prefix: str | None) -> str:
    text = (prefix or DEFAULT_WEB_PREFIX).strip().lower()
    if not _LABEL.match(text):
        raise BadRequest("'web_prefix' must be a single DNS label (letters, digits and hyphens)")
    return text


@dataclass(frozen=True)
class Domain:
    name: str
    cname_target: str
    web_prefix: str = DEFAULT_WEB_PREFIX
    created_at: float = field(default_factory=time.time)
    open_tracking: bool = False
    place_at_the_top: bool = False
    click_tracking: str = "no"  # yes (HTML and text links), htmlonly, no
    click_implies_open: bool = True  # a human click with no open recorded also records a derived open
    cname_valid: str = "unknown"  # Mailgun's valid / invalid / unknown
    tracking_ready: bool = False  # the last definitive DNS answer was "valid"
    cname_status: str | None = None
    cname_detail: str | None = None
    cname_found: list[str] = field(default_factory=list)  # the CNAME chain DNS answered ("cached")
    cname_checked_at: float | None = None
    https_status: str | None = None  # the certificate served on the tracking host (scheduled checker)
    https_detail: str | None = None
    cert_days_left: int | None = None
    # The per-domain certificate and custom domain (tracking_hosts); "shared" where the deployment has none.
    host: tracking_hosts.TrackingHost = field(default_factory=tracking_hosts.TrackingHost)
    # Delivery connection settings (Mailgun's /connection): TLS required, certificates not verified, and
    # opentracking's own: the transport this domain's copies take ("" for the deployment's).
    require_tls: bool = False
    skip_verification: bool = False
    delivery_transport: str = ""
    # Unsubscribe tracking (Mailgun's): a signed unsubscribe link in each copy, a footer where the message
    # has no %unsubscribe_url% of its own, and RFC 8058's one-click List-Unsubscribe headers.
    unsubscribe_tracking: bool = False
    html_footer: str = DEFAULT_HTML_FOOTER
    text_footer: str = DEFAULT_TEXT_FOOTER
    # The sending identity (SPF, DKIM, MAIL FROM) for the transport the domain's copies take, checked.
    identity: sending_identity.Identity = field(default_factory=sending_identity.Identity)

    @property
    def tracking_host(self) -> str:
        return f"{self.web_prefix}.{self.name}"

    # --- DynamoDB ---
    def to_item(self) -> dict[str, Any]:
        return {
            **keys.domain_key(self.name),
            "type": "domain",
            "gsi1pk": DOMAIN_LIST_KEY,
            "gsi1sk": self.name,
            **{key: value for key, value in asdict(self).items() if key != "created_at"},
            "created_at": str(self.created_at),
            "host": self.host.to_item(),
            "identity": self.identity.to_item(),
            "cname_checked_at": None if self.cname_checked_at is None else str(self.cname_checked_at),
        }

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Domain:
        def number(key: str) -> float | None:
            return None if item.get(key) is None else float(item[key])

        return cls(
            name=item["name"],
            cname_target=item.get("cname_target", ""),
            web_prefix=item.get("web_prefix", DEFAULT_WEB_PREFIX),
            created_at=number("created_at") or 0.0,
            open_tracking=bool(item.get("open_tracking", False)),
            place_at_the_top=bool(item.get("place_at_the_top", False)),
            click_tracking=item.get("click_tracking", "no"),
            click_implies_open=bool(item.get("click_implies_open", True)),
            cname_valid=item.get("cname_valid", "unknown"),
            tracking_ready=bool(item.get("tracking_ready", False)),
            cname_status=item.get("cname_status"),
            cname_detail=item.get("cname_detail"),
            cname_found=list(item.get("cname_found") or []),
            cname_checked_at=number("cname_checked_at"),
            https_status=item.get("https_status"),
            https_detail=item.get("https_detail"),
            cert_days_left=None if item.get("cert_days_left") is None else int(item["cert_days_left"]),
            host=tracking_hosts.TrackingHost.from_item(item.get("host")),
            require_tls=bool(item.get("require_tls", False)),
            skip_verification=bool(item.get("skip_verification", False)),
            delivery_transport=str(item.get("delivery_transport") or ""),
            unsubscribe_tracking=bool(item.get("unsubscribe_tracking", False)),
            html_footer=str(item.get("html_footer", DEFAULT_HTML_FOOTER)),
            text_footer=str(item.get("text_footer", DEFAULT_TEXT_FOOTER)),
            identity=sending_identity.Identity.from_item(item.get("identity")),
        )

    # --- Mailgun shapes ---
    @property
    def opaque_id(self) -> str:
        """The domain's id in Mailgun's form (24 hex digits), opaque: not its name."""
        return hashlib.sha256(f"opentracking-domain:{self.name}".encode()).hexdigest()[:24]

    def mailgun(self) -> dict[str, Any]:
        """Every field of Mailgun's domain object (its Go SDK's mtypes.Domain), the ones for features this
        deployment does not have at their off value."""
        mail_from = next((r.name for r in self.identity.records if r.purpose == "mail_from"), "")
        return {
            "archive_to": "",
            "created_at": formatdate(self.created_at, usegmt=True),
            "dkim_host": self.name,
            "encrypt_incoming_message": False,
            "id": self.opaque_id,
            "is_disabled": False,
            "mailfrom_host": mail_from,
            # how long the message-storage API finds a copy
            "message_ttl": settings().event_retention_days * 86400,
            "name": self.name,
            "require_tls": self.require_tls,
            "skip_verification": self.skip_verification,
            "smtp_login": f"postmaster@{self.name}",
            "spam_action": "disabled",
            "state": "active" if self.tracking_ready else "unverified",
            "subaccount_id": "",
            "tracking_host": self.tracking_host,
            "type": "custom",
            "use_automatic_sender_security": True,
            "web_prefix": self.web_prefix,
            "web_scheme": "https",
            "wildcard": False,
        }

    def tracking_record(self) -> dict[str, Any]:
        """The tracking CNAME as Mailgun lists a DNS record, with the last check's findings."""
        return {
            "record_type": "CNAME",
            "name": self.tracking_host,
            "value": self.cname_target,
            "valid": self.cname_valid,
            "is_active": self.tracking_ready,
            "cached": list(self.cname_found),
            "status": self.cname_status,
            "detail": self.cname_detail,
            "purpose": "tracking",
            "checked_at": self.cname_checked_at,
            "https": {
                "status": self.https_status,
                "days_left": self.cert_days_left,
                "detail": self.https_detail,
            },
        }

    def response(self, message: str | None = None) -> dict[str, Any]:
        validation = self.host.validation_record()
        body = {
            "domain": self.mailgun(),
            "receiving_dns_records": [],
            # Mailgun's order: SPF, DKIM, MAIL FROM (MX, TXT), then the tracking CNAME.
            "sending_dns_records": [
                *(record.mailgun() for record in self.identity.records),
                self.tracking_record(),
                *([validation] if validation else []),
            ],
            "sending_identity": self.identity.summary(),
            "tracking_host": self.host.summary(self.name, self.tracking_host),
        }
        if message:
            body["message"] = message
        return body

    def tracking(self) -> dict[str, Any]:
        return {
            "tracking": {
                "open": {"active": self.open_tracking, "place_at_the_top": self.place_at_the_top},
                "click": self.click_setting(),
                "unsubscribe": self.unsubscribe_setting(),
            }
        }

    def unsubscribe_setting(self) -> dict[str, Any]:
        return {
            "active": self.unsubscribe_tracking,
            "html_footer": self.html_footer,
            "text_footer": self.text_footer,
        }

    def connection(self, deployment_transport: str) -> dict[str, Any]:
        """Mailgun's connection settings, with the transport this domain's copies take (its own setting, or
        the deployment's)."""
        return {
            "require_tls": self.require_tls,
            "skip_verification": self.skip_verification,
            "delivery_transport": self.delivery_transport or deployment_transport,
        }

    def click_setting(self) -> dict[str, Any]:
        """Mailgun's shape (`active`: true, false or "htmlonly") plus opentracking's `implies_open`."""
        active = {"yes": True, "no": False}.get(self.click_tracking, self.click_tracking)
        return {"active": active, "implies_open": self.click_implies_open}

    def with_check(self, check: dns_check.CnameCheck) -> Domain:
        definitive = check.mailgun_valid != "unknown"
        host = tracking_hosts.with_cname(self.host, check.mailgun_valid)
        return replace(
            self,
            host=host,
            cname_valid=check.mailgun_valid,
            # Pixels need both: the CNAME reaching us, and (per-domain hosts) a certificate that serves it.
            tracking_ready=host.serving and (check.valid if definitive else self.tracking_ready),
            cname_status=str(check.status),
            cname_detail=check.detail,
            cname_found=list(check.chain[1:]) if check.chain else ([check.found] if check.found else []),
            cname_checked_at=check.checked_at,
        )


def get(name: str) -> Domain:
    item = store.get_item(table_name(), keys.domain_key(name))
    if item is None:
        raise NotFound(f"Domain not found: {name}")
    return Domain.from_item(item)


def check(domain: Domain, *, renew: bool = False) -> Domain:
    """Advance the tracking host's certificate and custom domain, then check its DNS records now
    (bounded), and return the domain with the results. Never raises for AWS or DNS trouble: that is state."""
    # Imported where DNS is asked: dnspython costs ~70 ms of every cold start of the functions that only
    # read domains (the API, submission).
    from opentracking.domains import dns_check

    resolver = dns_check.make_resolver()
    transport = domain.delivery_transport or jobs.transport()
    sending = sending_identity.ensure(domain.name, transport, domain.identity)
    # The sending records are checked beside the tracking host's work, not after it: a verify must answer
    # within the API's timeout even when the domain's DNS times out.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sending-records") as pool:
        identity_checked = pool.submit(sending_identity.check, sending, resolver)
        checked = _check_tracking(replace(domain, identity=sending), resolver, renew)
        return replace(checked, identity=identity_checked.result())


def _check_tracking(domain: Domain, resolver: dns.resolver.Resolver, renew: bool) -> Domain:
    host = tracking_hosts.advance(domain.host, domain.tracking_host, renew=renew)
    host = tracking_hosts.with_validation_check(host, resolver)
    if host.state != tracking_hosts.HostState.SHARED:
        domain = replace(domain, cname_target=host.target)  # the custom domain's target, once known
    domain = replace(domain, host=host)
    if not domain.cname_target:
        # Nothing to compare the CNAME with yet: unknown, not invalid, and no pixels.
        return replace(
            domain,
            cname_valid="unknown",
            tracking_ready=False,
            cname_status="no_target",
            cname_detail=host.next_step(domain.name, domain.tracking_host),
            cname_found=[],
            cname_checked_at=time.time(),
        )
    from opentracking.domains import dns_check

    return domain.with_check(
        dns_check.check_cname(domain.tracking_host, domain.cname_target, resolver=resolver)
    )


def create(
    name: str | None,
    *,
    web_prefix: str | None,
    web_scheme: str | None,
    cname_target: str,
    api_id: str = "",
) -> Domain:
    domain_name = normalise_domain(name)
    scheme = (web_scheme or "https").strip().lower()
    if scheme not in ("http", "https"):
        raise BadRequest("'web_scheme' must be http or https")
    # web_scheme=http is accepted as Mailgun accepts it, but links stay https: an HSTS policy on the
    # customer's domain can then never break a pixel (the seed's third failure mode).
    host = replace(tracking_hosts.initial(), api_id=api_id)
    domain = Domain(
        name=domain_name,
        cname_target="" if host.state != tracking_hosts.HostState.SHARED else cname_target,
        web_prefix=normalise_web_prefix(web_prefix),
        host=host,
    )
    # Claim the name first, so a duplicate request never requests a second certificate.
    _put_if(domain, "attribute_not_exists(pk)", BadRequest(f"Domain {domain_name} already exists"))
    checked = check(domain)
    try:
        return save(checked)
    except NotFound:
        tracking_hosts.release(checked.host, checked.tracking_host)  # deleted meanwhile: leave nothing behind
        raise


def _put_if(domain: Domain, condition: str, conflict: OpenTrackingError) -> Domain:
    try:
        store.put_item(table_name(), domain.to_item(), condition=condition)
    except ClientError:  # store.put_item lets only a failed condition through; the rest is StorageUnavailable
        raise conflict from None
    return domain


def put(domain: Domain) -> Domain:
    """Store a domain as it is, created or replaced (imports, tests and the local stack)."""
    store.put_item(table_name(), domain.to_item())
    return domain


def save(domain: Domain) -> Domain:
    """Store a changed domain, only if it still exists (a concurrent delete wins)."""
    return _put_if(domain, "attribute_exists(pk)", NotFound(f"Domain not found: {domain.name}"))


def verify(name: str) -> Domain:
    """An explicit verify also replaces a failed or expired certificate (the checker only reports one)."""
    return save(check(get(name), renew=True))


def list_domains(*, limit: int = 100, skip: int = 0) -> tuple[list[Domain], int]:
    items = store.query_index(table_name(), "gsi1", "gsi1pk", DOMAIN_LIST_KEY)
    domains = [Domain.from_item(item) for item in items]
    return domains[skip : skip + limit], len(domains)


def _require_tracking_host(domain: Domain, what: str) -> None:
    """BadRequest, naming the next step, while the tracking host does not serve us yet."""
    if domain.tracking_ready:
        return
    if not domain.host.serving:
        raise BadRequest(
            f"{what} cannot be enabled until {domain.tracking_host} serves HTTPS. "
            f"{domain.host.next_step(domain.name, domain.tracking_host)}"
        )
    raise BadRequest(
        f"{what} cannot be enabled until the tracking CNAME {domain.tracking_host} points to "
        f"{domain.cname_target}. {domain.cname_detail or 'It has not been checked yet.'} "
        f"Fix the record, then PUT /v3/domains/{domain.name}/verify."
    )


def set_open_tracking(name: str, *, active: bool | None, place_at_the_top: bool | None) -> Domain:
    """Mailgun's rule: tracking cannot be switched on while the tracking CNAME is not valid."""
    domain = get(name)
    if active:
        _require_tracking_host(domain, "Open tracking")
    return save(
        replace(
            domain,
            open_tracking=domain.open_tracking if active is None else active,
            place_at_the_top=domain.place_at_the_top if place_at_the_top is None else place_at_the_top,
        )
    )


def set_click_tracking(name: str, *, active: str | None, implies_open: bool | None) -> Domain:
    """`active` is yes, no or htmlonly. As for opens, clicks cannot be switched on until the tracking host
    serves us: every link would point at a host that does not reach us."""
    domain = get(name)
    if active not in (None, "no"):
        _require_tracking_host(domain, "Click tracking")
    return save(
        replace(
            domain,
            click_tracking=domain.click_tracking if active is None else active,
            click_implies_open=domain.click_implies_open if implies_open is None else implies_open,
        )
    )


def set_unsubscribe_tracking(
    name: str, *, active: bool | None, html_footer: str | None, text_footer: str | None
) -> Domain:
    """Mailgun's unsubscribe tracking; None leaves a setting as it is. Like opens and clicks, it cannot be
    switched on until the tracking host serves us: the link would lead nowhere. A footer must carry
    %unsubscribe_url% (or %tag_unsubscribe_url%), else it would say "unsubscribe" and link nowhere."""
    domain = get(name)
    if active:
        _require_tracking_host(domain, "Unsubscribe tracking")
    for field_name, footer in (("html_footer", html_footer), ("text_footer", text_footer)):
        if footer is None:
            continue
        if len(footer) > MAX_FOOTER_CHARS:
            raise BadRequest(f"'{field_name}' must be at most {MAX_FOOTER_CHARS} characters")
        if "%unsubscribe_url%" not in footer and "%tag_unsubscribe_url%" not in footer:
            raise BadRequest(f"'{field_name}' must contain %unsubscribe_url% or %tag_unsubscribe_url%")
    return save(
        replace(
            domain,
            unsubscribe_tracking=domain.unsubscribe_tracking if active is None else active,
            html_footer=domain.html_footer if html_footer is None else html_footer,
            text_footer=domain.text_footer if text_footer is None else text_footer,
        )
    )


def set_connection(
    name: str,
    *,
    require_tls: bool | None,
    skip_verification: bool | None,
    delivery_transport: str | None,
) -> Domain:
    """The domain's delivery connection settings; None leaves one as it is. `delivery_transport` is one of
    the deployment's transports (`ses`, `smtp`, `none`) or `default` (the deployment's own)."""
    domain = get(name)
    return save(
        replace(
            domain,
            require_tls=domain.require_tls if require_tls is None else require_tls,
            skip_verification=domain.skip_verification if skip_verification is None else skip_verification,
            delivery_transport=(
                domain.delivery_transport
                if delivery_transport is None
                else ""
                if delivery_transport == "default"
                else delivery_transport
            ),
        )
    )


# --- changing a domain: Mailgun's PUT /v3|v4/domains/{name} and PUT /v3/domains/{name}/web_prefix ---

# Mailgun settings this deployment keeps fixed: accepted when a request gives their value, a 400 that says
# why otherwise (a client must not believe it changed something that did not change).
_FIXED = {
    "spam_action": ("disabled", "this deployment receives no mail, so there is nothing to filter for spam"),
    "wildcard": ("false", "each sending domain is registered on its own"),
    "use_automatic_sender_security": ("true", "DKIM keys are Amazon SES's Easy DKIM, rotated by SES"),
}
# Mailgun settings for things this deployment does not do.
_UNSUPPORTED = {
    "smtp_password": "this deployment has no SMTP submission service: send through the messages API",
    "archive_to": "delivered messages are kept in the bucket (the message-storage API), not POSTed on",
    "message_ttl": "stored copies are kept for the deployment's MessageRetentionDays",
}
UPDATE_FIELDS = (
    "web_prefix",
    "web_scheme",
    "require_tls",
    "skip_verification",
    "mailfrom_host",
    *_FIXED,
    *_UNSUPPORTED,
)


def update(name: str, fields: dict[str, str]) -> Domain:
    """Mailgun's domain update: the web prefix (see set_web_prefix), web scheme and TLS connection
    settings change; the rest are checked against what this deployment does. Every field is checked before
    anything changes, so a bad request changes nothing."""
    domain = get(name)
    unknown = sorted(set(fields) - set(UPDATE_FIELDS))
    if unknown:
        raise BadRequest(f"'{unknown[0]}' is not a setting of a domain")
    for field_name, (fixed, why) in _FIXED.items():
        value = fields.get(field_name)
        if value is not None and value.strip().lower() not in (
            fixed,
            {"true": "yes", "false": "no"}.get(fixed),
        ):
            raise BadRequest(f"'{field_name}' can only be {fixed} here: {why}")
    for field_name, why in _UNSUPPORTED.items():
        if fields.get(field_name) not in (None, ""):
            raise BadRequest(f"'{field_name}' is not supported: {why}")
    mail_from, mail_from_host = fields.get("mailfrom_host"), f"{sending_identity.MAIL_FROM_PREFIX}.{name}"
    if mail_from is not None and mail_from.strip().lower().rstrip(".") not in (
        sending_identity.MAIL_FROM_PREFIX,
        mail_from_host,
    ):
        raise BadRequest(f"'mailfrom_host' is {mail_from_host} here (SES's custom MAIL FROM)")
    scheme = fields.get("web_scheme")
    if scheme is not None and scheme.strip().lower() not in ("http", "https"):
        raise BadRequest("'web_scheme' must be http or https")
    require_tls = optional_bool("require_tls", fields.get("require_tls"))
    skip_verification = optional_bool("skip_verification", fields.get("skip_verification"))
    prefix = fields.get("web_prefix")
    if prefix is not None:
        normalise_web_prefix(prefix)
    if require_tls is not None or skip_verification is not None:
        domain = set_connection(
            name, require_tls=require_tls, skip_verification=skip_verification, delivery_transport=None
        )
    return set_web_prefix(name, prefix) if prefix is not None else domain


def set_web_prefix(name: str, prefix: str | None) -> Domain:
    """Move the domain's tracking host to `<prefix>.<domain>`. The new host starts over: its own
    certificate and custom domain (CustomDomains), a tracking CNAME to publish, and no pixels until that
    checks valid. The old host keeps serving the pixels already sent on it for EventRetentionDays (their
    copies expire then), and is released after that (tracking_hosts.retirement)."""
    if prefix is None or not prefix.strip():
        raise BadRequest("'web_prefix' parameter is missing")
    new_prefix = normalise_web_prefix(prefix)
    domain = get(name)
    if new_prefix == domain.web_prefix:
        return domain
    new_host_name = f"{new_prefix}.{domain.name}"
    host = tracking_hosts.revive(new_host_name) or replace(
        tracking_hosts.initial(), api_id=domain.host.api_id
    )
    moved = replace(
        domain,
        web_prefix=new_prefix,
        host=host,
        cname_target=host.target if host.state != tracking_hosts.HostState.SHARED else domain.cname_target,
        cname_valid="unknown",
        tracking_ready=False,
        cname_status=None,
        cname_detail=None,
        cname_found=[],
        cname_checked_at=None,
        https_status=None,
        https_detail=None,
        cert_days_left=None,
    )
    checked = check(moved)
    retired = tracking_hosts.retirement(
        domain.host,
        domain.tracking_host,
        domain.name,
        keep_seconds=settings().event_retention_days * 86400,
    )
    # The domain's new host and the old one's retirement together, only if nobody changed the prefix
    # meanwhile: a host is never both in use and due for release.
    operations = [
        store.put_operation(
            table_name(),
            checked.to_item(),
            condition="attribute_exists(pk) AND web_prefix = :old_prefix",
            condition_values={":old_prefix": domain.web_prefix},
        ),
        *([store.put_operation(table_name(), retired)] if retired else []),
    ]
    try:
        store.transact_write(operations)
    except store.TransactionCancelled:
        tracking_hosts.release(checked.host, checked.tracking_host)  # ours alone: nothing else uses it
        raise BadRequest(
            f"The domain {name} changed meanwhile (deleted or given another web prefix)"
        ) from None
    return checked
