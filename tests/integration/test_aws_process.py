"""moto's process in the local stack (devstack.aws_process): connections stay open between calls (moto's
own server closed each one, so every AWS call paid a connection and a thread on both sides), and calls
are answered while the stack's queue pollers hold connections in long polls."""

from __future__ import annotations

import http.client
import threading

import boto3
import pytest

from devstack.process import free_port
from devstack.server import start_aws, stop_aws

LIST_TABLES = {
    "X-Amz-Target": "DynamoDB_20120810.ListTables",
    "Content-Type": "application/x-amz-json-1.0",
    "Authorization": "AWS4-HMAC-SHA256 Credential=local/20260101/us-east-1/dynamodb/aws4_request, "
    "SignedHeaders=host, Signature=0",
}


@pytest.fixture(scope="module")
def aws_port():
    port = free_port()
    process = start_aws(port)
    yield port
    stop_aws(process)


def test_a_connection_serves_one_call_after_another(aws_port):
    connection = http.client.HTTPConnection("127.0.0.1", aws_port, timeout=10)
    try:
        for _ in range(3):
            connection.request("POST", "/", body="{}", headers=LIST_TABLES)
            response = connection.getresponse()
            assert (response.status, response.read()) == (200, b'{"TableNames": []}')
            assert not response.will_close
    finally:
        connection.close()


def test_calls_are_answered_while_queue_pollers_wait(aws_port):
    # GIVEN as many long polls as the local stack has queue pollers, and more
    endpoint = f"http://127.0.0.1:{aws_port}"
    sqs = boto3.client("sqs", endpoint_url=endpoint)
    queue = sqs.create_queue(QueueName="long-polls")["QueueUrl"]
    pollers = [
        threading.Thread(target=lambda: sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=3), daemon=True)
        for _ in range(8)
    ]
    for poller in pollers:
        poller.start()
    # WHEN another client calls meanwhile THEN it is answered before the polls end
    dynamodb = boto3.client("dynamodb", endpoint_url=endpoint)
    assert dynamodb.list_tables()["TableNames"] == []
    assert any(poller.is_alive() for poller in pollers)
    for poller in pollers:
        poller.join(10)
