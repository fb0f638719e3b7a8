"""A domain's sending identity: the DNS records that make its mail authentic, and their checks.

With SES as the domain's transport, creating the domain creates its SES identity with Easy DKIM (SES signs
every message with a 2048-bit key it rotates itself) and a custom MAIL FROM domain (`mail.<domain>`, so
SPF aligns with the From domain and DMARC passes on SPF as well as DKIM). The records the user must publish
then are, in Mailgun's order (`sending_dns_records`):

    TXT    <domain>                          v=spf1 include:amazonses.com ~all
    CNAME  <token>._domainkey.<domain>       <token>.dkim.amazonses.com          (three of them)
    MX     mail.<domain>                     10 feedback-smtp.<region>.amazonses.com
    TXT    mail.<domain>                     v=spf1 include:amazonses.com ~all

With the SMTP transport, the relay signs and sends: the only record this deployment can name is the
SPF include the operator gave (`SMTP_SPF_INCLUDE`, the template's SmtpSpfInclude); without it no sending
record is listed or checked, and the domain says so. With no transport, nothing is sent: no records.

Every record is checked with the tracking CNAME's DNS machinery (domains.dns_check), by `verify` and the
scheduled checker; each keeps Mailgun's `valid` (valid, invalid, unknown), `cached` (what DNS holds) and a
sentence naming the next step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from opentracking.core.aws import client
from opentracking.core.observability import logger

if TYPE_CHECKING:
    import dns.resolver

MAIL_FROM_PREFIX = "mail"
SES_SPF = "v=spf1 include:amazonses.com ~all"
SPF_INCLUDE_ENV = "SMTP_SPF_INCLUDE"
SMTP_NOTE = (
    "Mail goes through your SMTP relay, which signs and sends it: publish the SPF and DKIM records your "
    "relay documents. None is checked here; set SmtpSpfInclude (SMTP_SPF_INCLUDE) to have the SPF include "
    "checked."
)


@dataclass(frozen=True)
class Record:
    """One DNS record the identity needs, with its last check."""

    record_type: str  # TXT, CNAME or MX
    name: str
    value: str
    purpose: str  # spf, dkim, mail_from
    priority: int | None = None  # MX only
    valid: str = "unknown"
    cached: list[str] = field(default_factory=list)
    detail: str | None = None
    checked_at: float | None = None

    def mailgun(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "record_type": self.record_type,
            "name": self.name,
            "value": self.value,
            "valid": self.valid,
            "is_active": self.valid == "valid",
            "cached": list(self.cached),
            "purpose": self.purpose,
            "detail": self.detail,
            "checked_at": self.checked_at,
        }
        if self.priority is not None:
            record["priority"] = str(self.priority)
        return record

    def to_item(self) -> dict[str, Any]:
        return {
            "record_type": self.record_type,
            "name": self.name,
            "value": self.value,
            "purpose": self.purpose,
            "priority": self.priority,
            "valid": self.valid,
            "cached": list(self.cached),
            "detail": self.detail,
            "checked_at": None if self.checked_at is None else str(self.checked_at),
        }

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Record:
        return cls(
            record_type=item["record_type"],
            name=item["name"],
            value=item["value"],
            purpose=item.get("purpose", ""),
            priority=None if item.get("priority") is None else int(item["priority"]),
            valid=item.get("valid", "unknown"),
            cached=list(item.get("cached") or []),
            detail=item.get("detail"),
            checked_at=None if item.get("checked_at") is None else float(item["checked_at"]),
        )


@dataclass(frozen=True)
class Identity:
    """What the domain's transport needs in DNS. `transport` is the one the records are for; `error` says
    why SES could not create the identity (it is tried again at the next verify or check)."""

    transport: str = ""
    records: tuple[Record, ...] = ()
    ses_created: bool = False
    error: str | None = None
    note: str | None = None

    def to_item(self) -> dict[str, Any]:
        return {
            "transport": self.transport,
            "records": [record.to_item() for record in self.records],
            "ses_created": self.ses_created,
            "error": self.error,
            "note": self.note,
        }

    @classmethod
    def from_item(cls, item: dict[str, Any] | None) -> Identity:
        if not item:
            return cls()
        return cls(
            transport=item.get("transport", ""),
            records=tuple(Record.from_item(r) for r in item.get("records") or []),
            ses_created=bool(item.get("ses_created")),
            error=item.get("error"),
            note=item.get("note"),
        )

    @property
    def invalid(self) -> list[Record]:
        """The records DNS answered about without the value needed (unknown is not invalid)."""
        return [record for record in self.records if record.valid == "invalid"]

    def summary(self) -> dict[str, Any]:
        return {
            "transport": self.transport,
            "ses_identity": self.ses_created,
            "error": self.error,
            "note": self.note,
            "records_invalid": len(self.invalid),
        }


def _region() -> str:
    return str(client("sesv2").meta.region_name)


def ses_records(domain: str, dkim_tokens: list[str], region: str) -> tuple[Record, ...]:
    mail_from = f"{MAIL_FROM_PREFIX}.{domain}"
    return (
        Record("TXT", domain, SES_SPF, "spf"),
        *(
            Record("CNAME", f"{token}._domainkey.{domain}", f"{token}.dkim.amazonses.com", "dkim")
            for token in dkim_tokens
        ),
        Record("MX", mail_from, f"feedback-smtp.{region}.amazonses.com", "mail_from", priority=10),
        Record("TXT", mail_from, SES_SPF, "mail_from"),
    )


def _ses_identity(domain: str) -> list[str]:
    """Create (or find) the SES identity with Easy DKIM and the custom MAIL FROM; its DKIM tokens."""
    ses = client("sesv2")
    try:
        created = ses.create_email_identity(
            EmailIdentity=domain, DkimSigningAttributes={"NextSigningKeyLength": "RSA_2048_BIT"}
        )
        tokens = list(created.get("DkimAttributes", {}).get("Tokens") or [])
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "AlreadyExistsException":
            raise
        tokens = list(
            ses.get_email_identity(EmailIdentity=domain).get("DkimAttributes", {}).get("Tokens") or []
        )
    ses.put_email_identity_mail_from_attributes(
        EmailIdentity=domain,
        MailFromDomain=f"{MAIL_FROM_PREFIX}.{domain}",
        # Until the MX is published, SES uses its own MAIL FROM rather than refusing to send.
        BehaviorOnMxFailure="USE_DEFAULT_VALUE",
    )
    return tokens


def ensure(domain: str, transport: str, current: Identity) -> Identity:
    """The identity for the transport the domain's copies take now: created in SES when that is SES and it
    is not yet (or failed before), the records listed; checks already made are kept for unchanged
    records. Never raises for AWS trouble: the error is kept and shown."""
    if transport == current.transport and not current.error:
        return current
    if transport == "ses":
        try:
            tokens = _ses_identity(domain)
        except (ClientError, BotoCoreError) as exc:
            reason = exc.response["Error"]["Code"] if isinstance(exc, ClientError) else type(exc).__name__
            logger.warning("SES identity not created", extra={"domain": domain, "error": reason})
            return Identity(
                transport,
                (),
                False,
                f"SES could not create the identity ({reason}); it is tried again at the next verify.",
            )
        return Identity(transport, _keep_checks(ses_records(domain, tokens, _region()), current), True)
    if transport == "smtp":
        include = os.environ.get(SPF_INCLUDE_ENV, "").strip()
        if not include:
            return Identity(transport, (), current.ses_created, None, SMTP_NOTE)
        spf = Record("TXT", domain, f"v=spf1 include:{include} ~all", "spf")
        return Identity(transport, _keep_checks((spf,), current), current.ses_created)
    return Identity(transport, (), current.ses_created, None, "Nothing is sent for this domain: no records.")


def _keep_checks(records: tuple[Record, ...], current: Identity) -> tuple[Record, ...]:
    checked = {(r.record_type, r.name, r.value): r for r in current.records}
    return tuple(checked.get((r.record_type, r.name, r.value), r) for r in records)


def check(identity: Identity, resolver: dns.resolver.Resolver) -> Identity:
    """Every record checked in DNS now (bounded, never raising for DNS outcomes)."""
    from opentracking.domains import dns_check  # on first use: see registry.check

    checked = []
    for record in identity.records:
        if record.record_type == "CNAME":
            result = dns_check.check_cname(record.name, record.value, resolver=resolver)
            checked.append(
                replace(
                    record,
                    valid=result.mailgun_valid,
                    cached=[hop for hop in result.chain[1:]],
                    detail=result.detail,
                    checked_at=result.checked_at,
                )
            )
            continue
        found = dns_check.check_record(
            record.name, "MX" if record.record_type == "MX" else "TXT", record.value, resolver=resolver
        )
        checked.append(
            replace(
                record,
                valid=found.valid,
                cached=found.cached,
                detail=found.detail,
                checked_at=found.checked_at,
            )
        )
    return replace(identity, records=tuple(checked))


def release(domain: str, identity: Identity) -> None:
    """A deleted domain's SES identity goes too (if this deployment created it)."""
    if not identity.ses_created:
        return
    try:
        client("sesv2").delete_email_identity(EmailIdentity=domain)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "NotFoundException":
            raise
