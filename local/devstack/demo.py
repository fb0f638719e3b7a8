"""`make demo`: a tracked open from start to finish against a running `make run`, printing each step.

It walks the seed's checklist: the tracking CNAME (first missing, then published in the local DNS and
verified), tracking switched on, a tagged HTML message sent with the official Mailgun SDK, the message as
the recipient's mail server received it (the local SMTP server, where `make run` delivers) and its pixel,
the pixel loaded as a mail client would, the open recorded, and Mailgun's accepted, delivered and opened
events. With delivery off (DELIVERY_TRANSPORT=none), the stored copy stands in for the received one.
"""

from __future__ import annotations

import email
import os
import re
import sys
import time
from email import policy
from pathlib import Path

import requests
from mailgun.client import Client

from devstack.process import StackClient
from devstack.server import DEFAULT_API_KEY, STATE_FILE

DOMAIN = os.environ.get("DEMO_DOMAIN", "demo.example.com")
RECIPIENT = "reader@example.net"


def step(number: int, title: str) -> None:
    print(f"\n== {number}. {title}")


def show(label: str, value: object) -> None:
    print(f"   {label}: {value}")


def main() -> int:
    stack = StackClient.from_state_file(
        Path(os.environ.get("OPENTRACKING_STATE_FILE", str(STATE_FILE))),
        os.environ.get("API_KEY") or DEFAULT_API_KEY,
    )
    try:
        requests.get(stack.api_url + "/o/ping", timeout=5, verify=stack.verify)
    except requests.RequestException:
        print(
            f"the local stack at {stack.api_url} is not answering: start it with `make run`", file=sys.stderr
        )
        return 1
    print(f"opentracking demo against {stack.api_url} (domain {DOMAIN})")

    step(1, "Create the sending domain")
    created = stack.call("POST", "/v3/domains", data={"name": DOMAIN})
    if created.status_code == 400 and "already exists" in created.text:
        stack.call("DELETE", f"/v3/domains/{DOMAIN}").raise_for_status()
        stack.call("DELETE", f"/_local/dns/email.{DOMAIN}")
        created = stack.call("POST", "/v3/domains", data={"name": DOMAIN})
    created.raise_for_status()
    record = created.json()["sending_dns_records"][0]
    show("tracking CNAME", f"{record['name']} -> {record['value']}")
    show("valid", f"{record['valid']} ({record['detail']})")

    step(2, "Try to switch open tracking on while the CNAME is missing")
    refused = stack.call("PUT", f"/v3/domains/{DOMAIN}/tracking/open", data={"active": "yes"})
    show(f"HTTP {refused.status_code}", refused.json()["message"])

    step(3, "Publish the CNAME at the (local) DNS provider and verify")
    stack.publish_dns(record["name"], "CNAME", record["value"])
    verified = stack.call("PUT", f"/v3/domains/{DOMAIN}/verify").json()
    show("valid", verified["sending_dns_records"][0]["valid"])
    show("domain state", verified["domain"]["state"])

    step(4, "Switch open tracking on")
    enabled = stack.call("PUT", f"/v3/domains/{DOMAIN}/tracking/open", data={"active": "yes"})
    enabled.raise_for_status()
    show("open tracking", enabled.json()["open"])

    step(5, "Send a tagged HTML message with the official Mailgun SDK")
    with Client(auth=("api", stack.api_key), api_url=stack.api_url) as sdk:
        sent = sdk.messages.create(
            domain=DOMAIN,
            data={
                "from": f"Demo <demo@{DOMAIN}>",
                "to": RECIPIENT,
                "subject": "Your November newsletter",
                "text": "Hello from opentracking",
                "html": "<html><body><h1>Hello from opentracking</h1></body></html>",
                "o:tag": "newsletter",
            },
        )
    sent.raise_for_status()
    show("response", sent.json())

    message_id = sent.json()["id"].strip("<>")
    ((record, data),) = [(r, d) for r, d in stack.copies_of(RECIPIENT) if r["message_id"] == message_id]
    mail_folder = stack.state.get("mail_folder")
    delivering = stack.state["environment"].get("DELIVERY_TRANSPORT") == "smtp" and mail_folder
    if delivering:
        step(6, "What the recipient's mail server received (the local SMTP server)")
        found = _received(Path(mail_folder), message_id)
        if found is None:
            print("   the message did not arrive within 30 seconds", file=sys.stderr)
            return 1
        path, received_data = found
        show("file", path)
        same = "the same bytes" if received_data == data else "NOT the bytes received"
        show("stored copy", f"s3://{stack.resource('MessageBucket')}/{record['s3_key']} ({same})")
        data = received_data
    else:
        step(6, "Where the copy is stored (delivery is off: DELIVERY_TRANSPORT=none)")
        show("S3 object", f"s3://{stack.resource('MessageBucket')}/{record['s3_key']}")
    received = email.message_from_bytes(data, policy=policy.default)
    for header in ("From", "To", "Subject", "Message-ID"):
        show(header, received[header])
    html = received.get_body(("html",)).get_content()
    pixel_url = re.search(r'<img src="([^"]+)"', html).group(1)
    show("pixel", pixel_url)

    step(7, "Load the pixel as the recipient's mail client would")
    path = pixel_url.split("://", 1)[1].split("/", 1)[1]
    opened = requests.get(
        f"{stack.api_url}/{path}",
        headers={"Host": f"email.{DOMAIN}", "User-Agent": "Mozilla/5.0 (demo mail client)"},
        timeout=10,
        verify=stack.verify,
    )
    show(f"HTTP {opened.status_code}", f"{opened.headers['Content-Type']}, {len(opened.content)} bytes")

    step(8, "The recorded open")
    copy_id = record["pk"].removeprefix("COPY#")
    deadline = time.monotonic() + 10
    opens = stack.copy_items(copy_id, "OPEN#")
    while not opens and time.monotonic() < deadline:
        time.sleep(0.2)
        opens = stack.copy_items(copy_id, "OPEN#")
    if not opens:
        print("   no open was recorded", file=sys.stderr)
        return 1
    raw = opens[-1]
    show("recipient", record["recipient"])
    show("tags", ", ".join(record["tags"]))
    show("opened at", time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(raw["ts"]["N"]))))
    show("from", f"{raw['ip']['S']} with {raw['user_agent']['S']!r}")
    if delivering:
        step(9, "Mailgun's events for the message: accepted, delivered, opened")
        deadline = time.monotonic() + 10
        while True:
            listed = stack.call("GET", f"/v3/{DOMAIN}/events", params={"message-id": message_id}).json()
            names = sorted({item["event"] for item in listed["items"]})
            if {"accepted", "delivered", "opened"} <= set(names) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        for item in sorted(listed["items"], key=lambda i: i["timestamp"]):
            status = item.get("delivery-status", {})
            detail = f" ({status['code']} {status['message']})" if status else ""
            show(item["event"], time.strftime("%H:%M:%S", time.gmtime(item["timestamp"])) + detail)
    print("\ndemo finished: a tracked open, end to end")
    return 0


def _received(folder: Path, message_id: str, seconds: float = 30.0) -> tuple[Path, bytes] | None:
    """The .eml the local SMTP server kept for the message (one per recipient's transaction)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for path in sorted(folder.glob("*.eml"), reverse=True):
            data = path.read_bytes()
            parsed = email.message_from_bytes(data, policy=policy.default)
            if str(parsed.get("Message-ID", "")).strip().strip("<>") == message_id:
                return path, data
        time.sleep(0.3)
    return None


if __name__ == "__main__":
    sys.exit(main())
