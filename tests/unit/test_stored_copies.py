"""Store once, render on read (opentracking.messages.copies), under moto: a tracked message to many
recipients is stored as one template, each copy is rendered from it with its own tokens when it is read,
byte for byte what was planned and what is sent; the other copies keep objects of their own."""

from __future__ import annotations

import json
import re

import boto3
import pytest

from opentracking.delivery import sender
from opentracking.delivery.replies import Outcome, Reply
from opentracking.messages import copies
from opentracking.messages.submission import SPLICE_MIN_COPIES, TEMPLATE_NAME
from opentracking.tracking import tokens

RECIPIENTS = [f"reader{n}@example.net" for n in range(6)]
PIXEL = re.compile(rb'/o/([A-Za-z0-9_-]+)"')
CLICK = re.compile(rb'/c/([A-Za-z0-9_-]+)"')
HTML = '<html><body><p>Hi</p><a href="https://shop.example.org/sale?x=1">Sale</a></body></html>'


def stored_keys(aws) -> list[str]:
    listed = boto3.client("s3").list_objects_v2(Bucket=aws.ref("MessageBucket")).get("Contents", [])
    return sorted(entry["Key"] for entry in listed)


def keyring(aws) -> tokens.KeyRing:
    secret = boto3.client("secretsmanager").get_secret_value(SecretId=aws.ref("TokenKeysSecret"))
    return tokens.KeyRing.from_secret(json.loads(secret["SecretString"]))


def test_a_message_to_many_is_stored_once_and_each_copy_rendered_with_its_own_tokens(world, aws):
    assert len(RECIPIENTS) >= SPLICE_MIN_COPIES
    world.send(", ".join(RECIPIENTS), extra=(("html", HTML), ("o:tracking-clicks", "htmlonly")))
    (key,) = stored_keys(aws)  # one object for the whole message: its template
    assert key.endswith("/" + TEMPLATE_NAME)
    ring, rendered = keyring(aws), {}
    for recipient in RECIPIENTS:
        copy = world.copy(recipient)
        assert copy["template"] is True and copy["s3_key"] == key
        body = copies.read(copy)
        rendered[recipient] = body
        (pixel,) = PIXEL.findall(body)
        (click,) = CLICK.findall(body)
        copy_id = copy["pk"].removeprefix("COPY#")
        assert tokens.verify_token(ring, pixel.decode()).copy_id == copy_id
        claims = tokens.verify_click_token(ring, click.decode())
        assert claims.copy_id == copy_id and claims.url == "https://shop.example.org/sale?x=1"
    # every copy is the same message but for its tokens
    blanked = {PIXEL.sub(b"", CLICK.sub(b"", body)) for body in rendered.values()}
    assert len(blanked) == 1
    # opening a rendered copy's pixel records the open for that recipient
    world.open(RECIPIENTS[3])
    world.consume()
    assert [event["recipient"] for event in world.opened()] == [RECIPIENTS[3]]


def test_a_rendered_copy_survives_key_rotation_byte_for_byte(world, aws):
    world.send(", ".join(RECIPIENTS))
    copy = world.copy(RECIPIENTS[0])
    before = copies.read(copy)
    old = json.loads(
        boto3.client("secretsmanager").get_secret_value(SecretId=aws.ref("TokenKeysSecret"))["SecretString"]
    )
    rotated = {**old, "active": "2", "2": "a-newer-key-0123456789abcdef0123456789abcdef"}
    boto3.client("secretsmanager").put_secret_value(
        SecretId=aws.ref("TokenKeysSecret"), SecretString=json.dumps(rotated)
    )
    tokens.reset_cache()
    copies.reset_cache()
    # sealed with the key the submission used while the ring still holds it: what was planned
    assert copies.read(copy) == before
    retired = {key: value for key, value in rotated.items() if key != old["active"]}
    boto3.client("secretsmanager").put_secret_value(
        SecretId=aws.ref("TokenKeysSecret"), SecretString=json.dumps(retired)
    )
    tokens.reset_cache()
    after = copies.read(copy)
    # that key retired: sealed with the active one, still this copy's token
    (pixel,) = PIXEL.findall(after)
    assert after != before and tokens.verify_token(keyring(aws), pixel.decode()).key_id == 2


@pytest.mark.parametrize(
    ("recipients", "extra"),
    [
        (RECIPIENTS[:2], ()),  # fewer copies than a template is worth
        (RECIPIENTS, (("recipient-variables", json.dumps({r: {"n": i} for i, r in enumerate(RECIPIENTS)})),)),
        (RECIPIENTS, (("o:tracking", "no"),)),  # untracked: nothing to render
    ],
)
def test_other_copies_keep_objects_of_their_own(world, aws, recipients, extra):
    world.send(", ".join(recipients), extra=extra)
    keys = stored_keys(aws)
    assert len(keys) == len(recipients) and not any(k.endswith(TEMPLATE_NAME) for k in keys)
    for recipient in recipients:
        copy = world.copy(recipient)
        assert copy["template"] is False
        stored = boto3.client("s3").get_object(Bucket=aws.ref("MessageBucket"), Key=copy["s3_key"])
        assert copies.read(copy) == stored["Body"].read()


def test_the_sender_sends_each_rendered_copy_as_read(world, aws, monkeypatch):
    monkeypatch.setenv("DELIVERY_TRANSPORT", "smtp")
    monkeypatch.setenv("SMTP_RELAY", "relay.example.test:587")
    for name, value in aws.function_environment("SenderFunction").items():
        if name == "TOKEN_SECRET_NAME":
            monkeypatch.setenv(name, value)
    sender.reset_cache()
    world.send(", ".join(RECIPIENTS))
    sqs = boto3.client("sqs")
    sent: dict[str, bytes] = {}

    def relay(sender_address, recipient, data):
        sent[recipient] = data
        return Reply(Outcome.DELIVERED, 250, "2.0.0 Ok", False, "relay.example.test", 0.01)

    for _ in range(10):
        batch = sqs.receive_message(QueueUrl=aws.ref("SendQueue"), MaxNumberOfMessages=10).get("Messages", [])
        for message in batch:
            assert sender.process(message["Body"], transport=relay) == "delivered"
            sqs.delete_message(QueueUrl=aws.ref("SendQueue"), ReceiptHandle=message["ReceiptHandle"])
    assert sorted(sent) == RECIPIENTS
    for recipient, data in sent.items():
        assert data == copies.read(world.copy(recipient))  # what was sent is what the store renders
    assert len({PIXEL.findall(data)[0] for data in sent.values()}) == len(RECIPIENTS)


def test_erasing_one_recipient_keeps_the_template_the_others_render_from(world, aws, invoke):
    world.send(", ".join(RECIPIENTS))
    (key,) = stored_keys(aws)
    erased = invoke(
        "privacy",
        "POST",
        "/v3/example.com/erasures",
        route="/v3/{domain}/erasures",
        params={"domain": "example.com"},
        fields={"address": RECIPIENTS[0]},
    )
    assert erased[0] == 200, erased
    assert stored_keys(aws) == [key]
    for recipient in RECIPIENTS[1:]:
        assert PIXEL.findall(copies.read(world.copy(recipient)))


def test_templates_are_kept_within_a_size_budget(world, aws, monkeypatch):
    """A sender keeps the templates it read (a batch is usually one message's copies), but by size: a
    message may be 25 MB and the sender has 256 MB. The newest always stays; older ones go."""
    world.send(", ".join(RECIPIENTS))
    first = world.copy(RECIPIENTS[0])
    template_size = len(
        boto3.client("s3").get_object(Bucket=aws.ref("MessageBucket"), Key=first["s3_key"])["Body"].read()
    )
    monkeypatch.setattr(copies, "CACHED_TEMPLATE_BYTES", template_size)  # room for one
    copies.read(first)
    world.send(", ".join(f"other{n}@example.net" for n in range(5)))
    second = world.copy("other0@example.net")
    copies.read(second)
    assert list(copies._templates) == [second["s3_key"]]
    assert copies.read(first) == copies.read(world.copy(RECIPIENTS[0]))  # read again, rendered the same
