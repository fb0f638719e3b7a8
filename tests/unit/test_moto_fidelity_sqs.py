"""The local stack's SQS (moto, taught by devstack.moto_fidelity): a standard queue takes a message without
reading the queue's attributes (which count every message it holds), and answers as moto did otherwise:
delays, message and system attributes, validation; FIFO queues keep moto's own path."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.sqs import models

from devstack import moto_fidelity


@pytest.fixture
def sqs(aws):
    moto_fidelity.apply()
    return boto3.client("sqs")


def test_sending_to_a_standard_queue_does_not_read_its_attributes(sqs, monkeypatch):
    url = sqs.create_queue(QueueName="jobs")["QueueUrl"]
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(n), "MessageBody": f"m{n}"} for n in range(10)])
    reads = []
    attributes = models.Queue.attributes

    def counted(queue):
        reads.append(queue.name)
        return attributes.fget(queue)

    monkeypatch.setattr(models.Queue, "attributes", property(counted))
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(n), "MessageBody": f"n{n}"} for n in range(10)])
    sqs.send_message(QueueUrl=url, MessageBody="one more")
    assert reads == []  # what made each send cost as much as the queue held
    attributes_now = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    assert attributes_now["Attributes"]["ApproximateNumberOfMessages"] == "21"


def test_messages_keep_their_delay_and_attributes(sqs):
    url = sqs.create_queue(QueueName="jobs")["QueueUrl"]
    sqs.send_message(
        QueueUrl=url,
        MessageBody="later",
        DelaySeconds=900,
        MessageAttributes={"kind": {"DataType": "String", "StringValue": "job"}},
    )
    sqs.send_message(
        QueueUrl=url,
        MessageBody="now",
        MessageAttributes={"kind": {"DataType": "String", "StringValue": "job"}},
        MessageSystemAttributes={"AWSTraceHeader": {"DataType": "String", "StringValue": "Root=1-abc"}},
    )
    (message,) = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], AttributeNames=["All"]
    )["Messages"]
    assert message["Body"] == "now"  # the other one waits for its 15 minutes
    assert message["MessageAttributes"]["kind"]["StringValue"] == "job"
    assert message["Attributes"]["AWSTraceHeader"] == "Root=1-abc"
    with pytest.raises(ClientError, match="DelaySeconds"):
        sqs.send_message(QueueUrl=url, MessageBody="too late", DelaySeconds=901)


def test_a_fifo_queue_still_deduplicates_by_content(sqs):
    url = sqs.create_queue(
        QueueName="jobs.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"}
    )["QueueUrl"]
    for _ in range(2):
        sqs.send_message(QueueUrl=url, MessageBody="same", MessageGroupId="g")
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in messages] == ["same"]
