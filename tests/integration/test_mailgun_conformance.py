"""Every Mailgun route we serve, over HTTP from the running local stack, compared field by field (names,
JSON types, date formats) with what Mailgun documents for it.

The reference for each shape is Mailgun's own: the structs its Go SDK (github.com/mailgun/mailgun-go, v5:
`mtypes/*.go`, `events/*.go`) decodes each answer into, and for the routes that SDK does not have, the
fields Mailgun's API reference and its Node SDK (mailgun.js, `Types/`) list. A field the SDK decodes with
`omitempty`, or the reference marks optional, is `Optional` here. A shape that drifts from Mailgun's fails
here before it fails in a client that decodes it strictly (a Go SDK user's `json.Unmarshal`).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
import requests

from tests.helpers.polling import wait_for

DOMAIN = "conform.example.com"
READER = "conform-reader@example.net"
TAG = "conform-launch"


# --- the shape language ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Format:
    name: str

    def check(self, value: str) -> bool:
        try:
            if self.name == "RFC 2822":
                parsedate_to_datetime(value)
            elif self.name == "ISO 8601 without a zone":  # mtypes.ISO8601Time: "" or 2006-01-02T15:04:05
                return value == "" or bool(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?", value))
            else:  # RFC 3339, as Go's time.Time decodes it
                datetime.fromisoformat(value.replace("Z", "+00:00"))
        except (TypeError, ValueError):
            return False
        return True


@dataclass(frozen=True)
class Optional:
    spec: Any


RFC2822, RFC3339, ISO8601 = Format("RFC 2822"), Format("RFC 3339"), Format("ISO 8601 without a zone")
S, B, N, F = str, bool, int, float  # JSON string, boolean, integer (never a float) and number
ANY = object


def mismatches(value: Any, spec: Any, path: str = "$") -> list[str]:
    """Where `value` is not of the shape `spec`: a dict of field specs, a one-element list of the items'
    spec, a JSON type, a date Format or ANY."""
    if isinstance(spec, Optional):
        return mismatches(value, spec.spec, path)
    if spec is ANY:
        return []
    if isinstance(spec, Format):
        if not isinstance(value, str) or not spec.check(value):
            return [f"{path}: {value!r} is not {spec.name}"]
        return []
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return [f"{path}: {type(value).__name__}, not an object"]
        found = []
        for name, field in spec.items():
            if name not in value:
                if not isinstance(field, Optional):
                    found.append(f"{path}.{name}: missing")
                continue
            found += mismatches(value[name], field, f"{path}.{name}")
        return found
    if isinstance(spec, list):
        if not isinstance(value, list):
            return [f"{path}: {type(value).__name__}, not a list"]
        return [
            problem for i, item in enumerate(value) for problem in mismatches(item, spec[0], f"{path}[{i}]")
        ]
    if spec is F:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif spec is N:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, spec)
    return [] if ok else [f"{path}: {value!r} is not {spec.__name__}"]


def test_the_shape_language_finds_what_differs():
    spec = {"a": S, "b": [N], "c": Optional(RFC2822), "d": {"e": B}}
    assert mismatches({"a": "x", "b": [1, 2], "d": {"e": True}}, spec) == []
    assert mismatches({"a": 1, "b": [1.5], "c": "soon", "d": {}}, spec) == [
        "$.a: 1 is not str",
        "$.b[0]: 1.5 is not int",
        "$.c: 'soon' is not RFC 2822",
        "$.d.e: missing",
    ]


# --- Mailgun's shapes (mailgun-go v5 unless noted) --------------------------------------------------

PAGING = {"first": S, "last": S, "next": S, "previous": S}  # mtypes.Paging
DNS_RECORD = {  # mtypes.DNSRecord
    "is_active": B,
    "cached": [S],
    "name": Optional(S),
    "priority": Optional(S),
    "record_type": S,
    "valid": S,
    "value": S,
}
DOMAIN_SHAPE = {  # mtypes.Domain
    "archive_to": S,
    "created_at": RFC2822,
    "dkim_host": S,
    "encrypt_incoming_message": B,
    "id": S,
    "is_disabled": B,
    "mailfrom_host": S,
    "message_ttl": N,
    "name": S,
    "require_tls": B,
    "skip_verification": B,
    "smtp_login": S,
    "spam_action": S,
    "state": S,
    "subaccount_id": S,
    "type": S,
    "tracking_host": S,
    "use_automatic_sender_security": B,
    "web_prefix": S,
    "web_scheme": S,
    "wildcard": B,
}
DOMAIN_RESPONSE = {  # mtypes.GetDomainResponse
    "domain": DOMAIN_SHAPE,
    "receiving_dns_records": [DNS_RECORD],
    "sending_dns_records": [DNS_RECORD],
}
MESSAGE = {  # events.Message, events.MessageHeaders, events.Attachment
    "headers": {"to": S, "message-id": S, "from": S, "subject": S},
    "attachments": [{"filename": S, "content-type": S, "size": N}],
    "recipients": [S],
    "size": N,
}
GENERIC = {"event": S, "timestamp": F, "id": S, "log-level": S}  # events.Generic
ACCEPTED = {  # events.Accepted
    **GENERIC,
    "envelope": {"sender": S, "transport": S, "targets": S},
    "message": MESSAGE,
    "flags": {"is-authenticated": B, "is-test-mode": B},
    "recipient": S,
    "recipient-domain": S,
    "method": S,
    "tags": [S],
    "campaigns": [ANY],
    "user-variables": dict,
    "storage": {"key": S, "url": S},
}
OPENED = {  # events.Opened, events.ClientInfo, events.GeoLocation
    **GENERIC,
    "message": {"headers": {"message-id": S}},
    "campaigns": [ANY],
    "recipient": S,
    "recipient-domain": S,
    "tags": [S],
    "ip": S,
    "client-info": {
        "client-name": S,
        "client-os": S,
        "client-type": S,
        "device-type": S,
        "user-agent": S,
        "bot": S,
    },
    "geolocation": {"city": S, "country": S, "region": S},
    "user-variables": dict,
}
TAG_SHAPE = {"tag": S, "description": S, "first-seen": RFC3339, "last-seen": RFC3339}  # mtypes.Tag
STATS_TOTAL = {  # mtypes (stats) and Mailgun's stats reference
    "start": RFC2822,
    "end": RFC2822,
    "resolution": S,
    "stats": [
        {
            "time": RFC2822,
            "accepted": {"incoming": N, "outgoing": N, "total": N},
            "opened": {"total": N},
        }
    ],
}
METRICS = {  # mtypes.MetricsResponse
    "start": RFC2822,
    "end": RFC2822,
    "resolution": S,
    "duration": S,
    "dimensions": [S],
    "aggregates": {"metrics": {"accepted_count": N, "opened_rate": S}},
    "items": [{"dimensions": [{"dimension": S, "value": S, "display_value": S}], "metrics": dict}],
    "pagination": {"sort": S, "skip": N, "limit": N, "total": N},
}
ACCOUNT_TAGS = {  # Mailgun's API reference, POST /v1/analytics/tags; mailgun.js Types/Tags
    "items": [
        {
            "account_id": S,
            "parent_account_id": S,
            "tag": S,
            "description": S,
            "first_seen": RFC3339,
            "last_seen": RFC3339,
            "account_name": S,
            "metrics": Optional(dict),
        }
    ],
    "pagination": {"sort": S, "skip": N, "limit": N, "total": Optional(N)},
}
LOGS = {  # Mailgun's API reference, POST /v1/analytics/logs; mailgun.js Types/Logs
    "start": RFC2822,
    "end": RFC2822,
    "items": [
        {
            "id": S,
            "event": S,
            "@timestamp": RFC3339,
            "account": {"id": S},
            "domain": {"name": S},
            "recipient": Optional(S),
            "tags": Optional([S]),
            "user-variables": Optional(S),
            "storage": Optional({"key": S, "url": [S]}),
        }
    ],
    "pagination": {"next": Optional(S), "total": Optional(N)},
    "aggregates": dict,
}
STORED_MESSAGE = {  # mtypes.StoredMessage
    "recipients": S,
    "sender": S,
    "from": S,
    "subject": S,
    "body-plain": S,
    "stripped-text": S,
    "stripped-signature": S,
    "body-html": S,
    "stripped-html": S,
    "attachments": [{"size": N, "url": S, "name": S, "content-type": S}],
    "message-url": S,
    "content-id-map": dict,
    "message-headers": [[S]],
}


# --- the traffic ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(local_stack):
    local_stack.create_tracked_domain(DOMAIN)
    sent = local_stack.call(
        "POST",
        f"/v3/{DOMAIN}/messages",
        data=[
            ("from", f"Newsletter <news@{DOMAIN}>"),
            ("to", f"Reader <{READER}>"),
            ("subject", "Conformance"),
            ("html", "<html><body><p>Hello</p></body></html>"),
            ("o:tag", TAG),
            ("v:campaign", "spring"),
        ],
        files=[("attachment", ("terms.pdf", b"%PDF-1.4 terms", "application/pdf"))],
    )
    assert sent.status_code == 200, sent.text
    (_, body) = local_stack.copies_of(READER)[0]
    token = re.search(rb'src="[^"]+/o/([^"]+)"', body).group(1).decode()
    time.sleep(0.2)
    assert requests.get(f"{local_stack.api_url}/o/{token}", timeout=10).status_code == 200

    def opened():
        answer = local_stack.call("GET", f"/v3/{DOMAIN}/events", params={"event": "opened"}).json()
        tagged = local_stack.call("GET", f"/v3/{DOMAIN}/tags/{TAG}").status_code == 200
        return answer["items"] and tagged

    assert wait_for(opened, seconds=60)
    return local_stack


def json_of(response: requests.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    return response.json()


def assert_conforms(value: Any, spec: Any) -> None:
    problems = mismatches(value, spec)
    assert not problems, "\n".join(problems)


# --- the routes -------------------------------------------------------------------------------------


def test_sending_answers_as_mailgun_does(stack):
    answer = json_of(
        stack.call(
            "POST",
            f"/v3/{DOMAIN}/messages",
            data={"from": f"news@{DOMAIN}", "to": "other@example.net", "subject": "x", "text": "x"},
        )
    )
    assert_conforms(answer, {"id": S, "message": S})  # mtypes.SendMessageResponse


def test_domains(stack):
    assert_conforms(json_of(stack.call("GET", f"/v3/domains/{DOMAIN}")), DOMAIN_RESPONSE)
    assert_conforms(json_of(stack.call("GET", f"/v4/domains/{DOMAIN}")), DOMAIN_RESPONSE)
    listed = json_of(stack.call("GET", "/v4/domains"))
    assert_conforms(listed, {"total_count": N, "items": [DOMAIN_SHAPE]})  # mtypes.ListDomainsResponse
    updated = json_of(stack.call("PUT", f"/v4/domains/{DOMAIN}", data={"require_tls": "false"}))
    assert_conforms(updated, {**DOMAIN_RESPONSE, "message": S})
    tracking = json_of(stack.call("GET", f"/v3/domains/{DOMAIN}/tracking"))
    assert_conforms(  # mtypes.DomainTrackingResponse
        tracking,
        {"tracking": {"open": {"active": B}, "click": {"active": ANY}, "unsubscribe": {"active": B}}},
    )
    connection = json_of(stack.call("GET", f"/v3/domains/{DOMAIN}/connection"))
    assert_conforms(connection, {"connection": {"require_tls": B, "skip_verification": B}})
    limits = json_of(stack.call("GET", f"/v3/domains/{DOMAIN}/limits/tag"))
    assert_conforms(limits, {"id": S, "limit": N, "count": N})  # mtypes.TagLimits and Mailgun's reference
    certificate = json_of(stack.call("GET", f"/v2/x509/email.{DOMAIN}/status"))
    assert_conforms(certificate, {"status": S, "error": S, "certificate": S})  # mailgun.js Types/Domains


def test_events(stack):
    accepted = json_of(stack.call("GET", f"/v3/{DOMAIN}/events", params={"event": "accepted"}))
    assert_conforms(accepted, {"items": [ACCEPTED], "paging": PAGING})  # mtypes events response
    (reader,) = [item for item in accepted["items"] if item["recipient"] == READER]
    assert reader["message"]["attachments"][0]["filename"] == "terms.pdf"
    opened = json_of(stack.call("GET", f"/v3/{DOMAIN}/events", params={"event": "opened"}))
    assert_conforms(opened, {"items": [OPENED], "paging": PAGING})


def test_tags_and_stats(stack):
    assert_conforms(
        json_of(stack.call("GET", f"/v3/{DOMAIN}/tags")), {"items": [TAG_SHAPE], "paging": PAGING}
    )
    assert_conforms(json_of(stack.call("GET", f"/v3/{DOMAIN}/tags/{TAG}")), TAG_SHAPE)
    events = {"event": ["accepted", "opened"], "duration": "1d"}
    total = json_of(stack.call("GET", f"/v3/{DOMAIN}/stats/total", params=events))
    assert_conforms(total, STATS_TOTAL)
    assert_conforms(json_of(stack.call("GET", "/v3/stats/total", params=events)), STATS_TOTAL)
    tag_stats = json_of(stack.call("GET", f"/v3/{DOMAIN}/tags/{TAG}/stats", params=events))
    assert_conforms(tag_stats, {**STATS_TOTAL, "tag": S})
    counts = {m: N for m in ("clicked", "complained", "opened", "unique_clicked", "unique_opened")}
    devices = json_of(stack.call("GET", f"/v3/{DOMAIN}/tags/{TAG}/stats/aggregates/devices"))
    assert_conforms(devices, {"tag": S, "devices": {"desktop": counts, "mobile": counts}})


def test_the_v1_analytics_apis(stack):
    body = {"duration": "1d", "metrics": ["accepted_count", "opened_rate"], "include_aggregates": True}
    metrics = json_of(stack.call("POST", "/v1/analytics/metrics", json={**body, "dimensions": ["tag"]}))
    assert_conforms(metrics, METRICS)
    tags = json_of(stack.call("POST", "/v1/analytics/tags", json={"pagination": {"include_total": True}}))
    assert_conforms(tags, ACCOUNT_TAGS)
    limits = json_of(stack.call("GET", "/v1/analytics/tags/limits"))
    assert_conforms(limits, {"limit": N, "count": N, "limit_reached": B})
    logs = json_of(stack.call("POST", "/v1/analytics/logs", json={"include_totals": True}))
    assert_conforms(logs, LOGS)
    assert logs["items"]


def test_stored_messages_webhooks_and_suppressions(stack):
    found = json_of(stack.call("GET", f"/v3/{DOMAIN}/events", params={"event": "accepted"}))["items"]
    (accepted,) = [item for item in found if item["recipient"] == READER]
    path = requests.utils.urlparse(accepted["storage"]["url"]).path
    assert_conforms(json_of(stack.call("GET", path)), STORED_MESSAGE)
    raw = json_of(stack.call("GET", path, headers={"Accept": "message/rfc2822"}))
    assert_conforms(raw, {"recipients": S, "sender": S, "from": S, "subject": S, "body-mime": S})

    created = json_of(
        stack.call(
            "POST",
            f"/v3/domains/{DOMAIN}/webhooks",
            data={"id": "opened", "url": "https://hooks.example.net/opened"},
        )
    )
    assert_conforms(created, {"message": S, "webhook": {"urls": [S]}})  # mtypes.WebHookResponse
    listed = json_of(stack.call("GET", f"/v3/domains/{DOMAIN}/webhooks"))
    assert_conforms(listed, {"webhooks": {"opened": {"urls": [S]}}})  # mtypes.WebHooksListResponse
    one = json_of(stack.call("GET", f"/v3/domains/{DOMAIN}/webhooks/opened"))
    assert_conforms(one, {"webhook": {"urls": [S]}})
    key = json_of(stack.call("GET", "/v5/accounts/http_signing_key"))
    assert_conforms(key, {"http_signing_key": S})  # mailgun.js Types/AccountManagement

    bounce = {"address": "gone@example.net", "code": "550", "error": "No such mailbox"}
    assert stack.call("POST", f"/v3/{DOMAIN}/bounces", data=bounce).status_code == 200
    bounces = json_of(stack.call("GET", f"/v3/{DOMAIN}/bounces"))
    bounce_shape = {"address": S, "code": S, "error": S, "created_at": RFC2822}  # mtypes.Bounce
    assert_conforms(bounces, {"items": [bounce_shape], "paging": PAGING})
    assert_conforms(json_of(stack.call("GET", f"/v3/{DOMAIN}/bounces/gone@example.net")), bounce_shape)


def test_unsubscribes_complaints_and_keys(stack):
    assert stack.call("POST", f"/v3/{DOMAIN}/unsubscribes", data={"address": "u@example.net"}).ok
    unsubscribe = {"address": S, "tags": Optional([S]), "created_at": Optional(RFC2822)}  # mtypes
    listed = json_of(stack.call("GET", f"/v3/{DOMAIN}/unsubscribes"))
    assert_conforms(listed, {"items": [unsubscribe], "paging": PAGING})
    assert stack.call("POST", f"/v3/{DOMAIN}/complaints", data={"address": "c@example.net"}).ok
    complaint = {"address": S, "count": N, "created_at": RFC2822}  # mtypes.Complaint
    assert_conforms(
        json_of(stack.call("GET", f"/v3/{DOMAIN}/complaints")), {"items": [complaint], "paging": PAGING}
    )

    key = {  # mtypes.APIKey
        "id": S,
        "description": S,
        "kind": S,
        "role": S,
        "created_at": ISO8601,
        "updated_at": ISO8601,
        "domain_name": Optional(S),
        "is_disabled": B,
        "expires_at": Optional(ISO8601),
    }
    created = stack.call(
        "POST", "/v1/keys", data={"role": "sending", "kind": "domain", "domain_name": DOMAIN}
    )
    assert_conforms(json_of(created), {"key": {**key, "secret": S}})
    assert_conforms(json_of(stack.call("GET", "/v1/keys")), {"items": [key], "total_count": N})


def test_errors_are_mailguns_json_with_a_message(stack):
    for method, path in (
        ("GET", "/v3/domains/nowhere.example"),
        ("GET", f"/v3/{DOMAIN}/tags/never-used"),
        ("POST", "/v1/analytics/logs"),
    ):
        response = stack.call(method, path, data="not json" if method == "POST" else None)
        assert response.status_code in (400, 404), (path, response.status_code)
        assert_conforms(json_of(response, response.status_code), {"message": S})
