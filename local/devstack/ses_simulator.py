"""Amazon SES as the local stack's AWS (moto) answers it: the account, and the reports SES sends.

moto's SESv2 takes SendEmail (and keeps the message), but SES's account has no GetAccount there, and SES's
reports on each message never come. Here, moto is taught both, as AWS documents them:

- GetAccount answers an account out of the sandbox, with a maximum send rate of LOCAL_SES_MAX_SEND_RATE
  messages a second (14 by default, SES's usual first production rate) and a daily quota of 50,000;
- every sender is verified (the local stack cannot publish DNS records for SES to see); a domain identity
  created with Easy DKIM gets its three DKIM tokens (derived from the name, so they are stable), and
  PutEmailIdentityMailFromAttributes (which moto lacks) is kept and shown by GetEmailIdentity;
- a raw message goes to the envelope recipients the call names (Destination), and to no one else: moto
  also sent it to every address in its To and Cc headers, which SES does only when no Destination is
  given. Each recipient's copy names all of the message's recipients in its headers, so moto sent every
  copy to all of them;
- a SendEmail under a configuration set publishes SES's reports on each recipient to the default
  EventBridge bus, in SES's JSON (the `detail` AWS documents for each event type, with the message's
  headers and tags), as the template's event destination does; the template's rule then queues them.
  The mailbox simulator's addresses report as SES's do: `success@simulator.amazonses.com` (delivered),
  `bounce@` (a permanent bounce, 550 5.1.1), `ooto@` (delivered; the auto-reply goes to the sender),
  `complaint@` (delivered, then a complaint) and `suppressionlist@` (a permanent bounce: the address is
  on the account's suppression list). A label after `+` is kept (`success+news@...`). Any other address
  is reported delivered: the local SES sends nowhere.

Reports are published LOCAL_SES_REPORT_SECONDS after the call (0.5 by default; 0 publishes them before
the call returns, as the unit tests want), the way SES's come a moment after it took the message.

`apply()` is idempotent and patches moto in this process (in-process mocks and a moto server alike).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import uuid
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.utils import getaddresses
from typing import Any

SIMULATOR_DOMAIN = "simulator.amazonses.com"
DEFAULT_MAX_SEND_RATE = 14.0
MAX_24_HOUR_SEND = 50000.0
# SES's event types: EventBridge's detail-type for each, and the field of the detail that holds the report.
REPORTS = {
    "Send": ("Email Sent", "send"),
    "Delivery": ("Email Delivered", "delivery"),
    "Bounce": ("Email Bounced", "bounce"),
    "Complaint": ("Email Complaint Received", "complaint"),
}
_applied = False
_sent_times: list[float] = []
_mail_from: dict[tuple[str, str], dict[str, str]] = {}


def dkim_tokens(domain: str) -> list[str]:
    """Easy DKIM's three selectors for a domain: 32 characters each, stable for the name."""
    return [hashlib.sha256(f"{domain.lower()}#{n}".encode()).hexdigest()[:32] for n in range(3)]


def apply() -> None:
    global _applied
    if _applied:
        return
    from moto.ses.exceptions import InvalidParameterValue
    from moto.ses.models import RawMessage, SESBackend
    from moto.ses.utils import get_random_message_id, is_valid_address
    from moto.sesv2.responses import SESV2Response

    original_send = SESV2Response.send_email
    original_send_raw = SESBackend.send_raw_email

    def send_raw_email(self: Any, source: str, destinations: list[str], raw_data: str) -> Any:
        if not destinations:
            return original_send_raw(self, source, destinations, raw_data)
        for address in (source, *destinations):
            problem = is_valid_address(address)
            if problem is not None:
                raise InvalidParameterValue(problem)
        message = RawMessage(get_random_message_id(), source, list(destinations), raw_data)
        self.sent_messages.append(message)
        self.sent_message_count += len(destinations)
        return message

    def get_account(self: Any) -> str:
        now = datetime.now(UTC).timestamp()
        sent = sum(1 for moment in _sent_times if moment > now - 86400)
        return json.dumps(
            {
                "DedicatedIpAutoWarmupEnabled": False,
                "EnforcementStatus": "HEALTHY",
                "ProductionAccessEnabled": True,
                "SendingEnabled": True,
                "SendQuota": {
                    "Max24HourSend": MAX_24_HOUR_SEND,
                    "MaxSendRate": max_send_rate(),
                    "SentLast24Hours": float(sent),
                },
                "SuppressionAttributes": {"SuppressedReasons": ["BOUNCE", "COMPLAINT"]},
            }
        )

    def send_email(self: Any) -> str:
        answer = original_send(self)
        params = json.loads(self.body)
        _sent_times.append(datetime.now(UTC).timestamp())
        if params.get("ConfigurationSetName"):
            reports = _reports(params, json.loads(answer)["MessageId"], self.current_account, self.region)
            _publish_later(reports, self.current_account, self.region)
        return answer

    original_create = SESV2Response.create_email_identity
    original_get = SESV2Response.get_email_identity

    def create_email_identity(self: Any) -> str:
        answer = json.loads(original_create(self))
        name = self._get_param("EmailIdentity")
        if "@" not in name and self._get_param("DkimSigningAttributes") is not None:
            answer["DkimAttributes"]["Tokens"] = dkim_tokens(name)
        return json.dumps(answer)

    def get_email_identity(self: Any) -> str:
        answer = json.loads(original_get(self))
        name = self._get_param("EmailIdentity")
        if answer.get("IdentityType") == "DOMAIN" and answer.get("DkimAttributes", {}).get("SigningEnabled"):
            answer["DkimAttributes"]["Tokens"] = dkim_tokens(name)
        if (self.current_account, name) in _mail_from:
            answer["MailFromAttributes"] = _mail_from[(self.current_account, name)]
        return json.dumps(answer)

    def put_email_identity_mail_from_attributes(self: Any) -> str:
        name = self._get_param("EmailIdentity")
        self.sesv2_backend.get_email_identity(email_identity=name)  # NotFoundException for an unknown one
        _mail_from[(self.current_account, name)] = {
            "MailFromDomain": self._get_param("MailFromDomain"),
            "MailFromDomainStatus": "PENDING",
            "BehaviorOnMxFailure": self._get_param("BehaviorOnMxFailure") or "USE_DEFAULT_VALUE",
        }
        return "{}"

    # moto server routes only the paths its sesv2 module lists (its catch-all does not become a route).
    from moto.sesv2 import urls as sesv2_urls

    mail_from_path = "{0}/v2/email/identities/(?P<EmailIdentity>[^/]+)/mail-from$"
    sesv2_urls.url_paths.setdefault(mail_from_path, SESV2Response.dispatch)
    SESV2Response.create_email_identity = create_email_identity
    SESV2Response.get_email_identity = get_email_identity
    SESV2Response.put_email_identity_mail_from_attributes = put_email_identity_mail_from_attributes
    SESV2Response.get_account = get_account
    SESV2Response.send_email = send_email
    SESBackend._is_verified_address = lambda self, source: True
    SESBackend.send_raw_email = send_raw_email
    _applied = True


def max_send_rate() -> float:
    return float(os.environ.get("LOCAL_SES_MAX_SEND_RATE") or DEFAULT_MAX_SEND_RATE)


def _report_delay() -> float:
    return float(os.environ.get("LOCAL_SES_REPORT_SECONDS") or 0.5)


def _publish_later(reports: list[dict[str, Any]], account: str, region: str) -> None:
    def publish() -> None:
        from moto.events.models import events_backends

        backend = events_backends[account][region]
        for start in range(0, len(reports), 10):
            backend.put_events(reports[start : start + 10])

    delay = _report_delay()
    if delay <= 0:
        publish()
        return
    timer = threading.Timer(delay, publish)
    timer.daemon = True
    timer.start()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _mail(
    params: dict[str, Any], message_id: str, recipient: str, account: str, region: str
) -> dict[str, Any]:
    """SES's `mail` object: who sent what to whom, the message's headers, and its tags."""
    raw = base64.b64decode(params["Content"]["Raw"]["Data"])
    message = message_from_bytes(raw, policy=policy.compat32)
    source = str(params.get("FromEmailAddress") or "")
    domain = source.rpartition("@")[2].rstrip(">")
    tags: dict[str, list[str]] = {
        "ses:configuration-set": [params["ConfigurationSetName"]],
        "ses:source-ip": ["127.0.0.1"],
        "ses:from-domain": [domain],
        "ses:caller-identity": ["local"],
    }
    for tag in params.get("EmailTags") or []:
        tags[tag["Name"]] = [tag["Value"]]
    return {
        "timestamp": _now(),
        "source": source,
        "sourceArn": f"arn:aws:ses:{region}:{account}:identity/{domain}",
        "sendingAccountId": account,
        "messageId": message_id,
        "destination": [recipient],
        "headersTruncated": False,
        "headers": [{"name": name, "value": str(value)} for name, value in message.items()],
        "commonHeaders": {
            "from": [str(message.get("From", ""))],
            "to": [address for _, address in getaddresses(message.get_all("To", []))],
            "messageId": message_id,
            "subject": str(message.get("Subject", "")),
        },
        "tags": tags,
    }


def _reports(params: dict[str, Any], message_id: str, account: str, region: str) -> list[dict[str, Any]]:
    """EventBridge events for each envelope recipient, as SES would publish them."""
    destination = params.get("Destination") or {}
    recipients = [
        *destination.get("ToAddresses", []),
        *destination.get("CcAddresses", []),
        *destination.get("BccAddresses", []),
    ]
    configuration_set_arn = (
        f"arn:aws:ses:{region}:{account}:configuration-set/{params['ConfigurationSetName']}"
    )
    entries = []
    for recipient in recipients:
        mail = _mail(params, message_id, recipient, account, region)
        for kind, report in _outcome(recipient):
            detail_type, field = REPORTS[kind]
            detail = {"eventType": kind, "mail": mail, field: report}
            entries.append(
                {
                    "Source": "aws.ses",
                    "DetailType": detail_type,
                    "Detail": json.dumps(detail),
                    "Resources": [configuration_set_arn],
                    "EventBusName": "default",
                }
            )
    return entries


def _outcome(recipient: str) -> list[tuple[str, dict[str, Any]]]:
    """What SES reports for one recipient, (event type, report) in order: the mailbox simulator's answers,
    or a delivery."""
    local, _, domain = recipient.rpartition("@")
    scenario = local.split("+", 1)[0].lower() if domain.lower() == SIMULATOR_DOMAIN else "success"
    sent: tuple[str, dict[str, Any]] = ("Send", {})
    delivered = (
        "Delivery",
        {
            "timestamp": _now(),
            "processingTimeMillis": 420,
            "recipients": [recipient],
            "smtpResponse": "250 2.6.0 Message received",
            "reportingMTA": "a8-70.smtp-out.amazonses.com",
            "remoteMtaIp": "127.0.0.1",
        },
    )
    if scenario == "bounce":
        return [sent, ("Bounce", _bounce(recipient, "General", "smtp; 550 5.1.1 user unknown"))]
    if scenario == "suppressionlist":
        diagnostic = (
            "Amazon SES did not send the message to this address because it is on the suppression list "
            "for your account."
        )
        return [sent, ("Bounce", _bounce(recipient, "OnAccountSuppressionList", diagnostic))]
    if scenario == "complaint":
        complaint = {
            "complainedRecipients": [{"emailAddress": recipient}],
            "timestamp": _now(),
            "feedbackId": f"0100{uuid.uuid4().hex}-000000",
            "userAgent": "Amazon SES Mailbox Simulator",
            "complaintFeedbackType": "abuse",
            "arrivalDate": _now(),
        }
        return [sent, delivered, ("Complaint", complaint)]
    return [sent, delivered]


def _bounce(recipient: str, subtype: str, diagnostic: str) -> dict[str, Any]:
    return {
        "bounceType": "Permanent",
        "bounceSubType": subtype,
        "bouncedRecipients": [
            {"emailAddress": recipient, "action": "failed", "status": "5.1.1", "diagnosticCode": diagnostic}
        ],
        "timestamp": _now(),
        "feedbackId": f"0100{uuid.uuid4().hex}-000000",
        "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com",
    }
