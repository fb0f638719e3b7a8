"""The local stack's DynamoDB (moto, taught by devstack.moto_fidelity): a transaction backs up only what it
touches and still cancels exactly as DynamoDB does, and concurrent requests never see a table mid-change."""

from __future__ import annotations

import json
import threading
import time

import boto3
import pytest
from botocore.exceptions import ClientError

from devstack import moto_fidelity


@pytest.fixture
def table(aws) -> str:
    moto_fidelity.apply()
    return aws.ref("DataTable")


def put(pk: str, sk: str, **attributes: str) -> dict:
    return {"pk": {"S": pk}, "sk": {"S": sk}, **{name: {"S": value} for name, value in attributes.items()}}


def stream_length(table: str) -> int:
    streams = boto3.client("dynamodbstreams")
    arn = boto3.client("dynamodb").describe_table(TableName=table)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    return len(streams.get_records(ShardIterator=iterator["ShardIterator"])["Records"])


def item(table: str, pk: str, sk: str) -> dict | None:
    key = {"pk": {"S": pk}, "sk": {"S": sk}}
    return boto3.client("dynamodb").get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")


def test_a_committed_transaction_writes_every_item_and_its_stream_records(table):
    ddb = boto3.client("dynamodb")
    before = stream_length(table)
    ddb.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": table, "Item": put("M#1", f"COPY#{n}", n=str(n))}} for n in range(100)
        ]
    )
    assert all(item(table, "M#1", f"COPY#{n}") == put("M#1", f"COPY#{n}", n=str(n)) for n in range(100))
    assert stream_length(table) == before + 100


def test_a_cancelled_transaction_puts_back_exactly_what_it_changed(table):
    # GIVEN an item to update, one to delete, and one whose condition will fail
    ddb = boto3.client("dynamodb")
    ddb.put_item(TableName=table, Item=put("A", "1", state="before"))
    ddb.put_item(TableName=table, Item=put("B", "1", state="kept"))
    ddb.put_item(TableName=table, Item=put("C", "1", state="exists"))
    before = stream_length(table)

    # WHEN a transaction puts a new item, updates one, deletes one, and then fails its last condition
    with pytest.raises(ClientError) as raised:
        ddb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": table, "Item": put("N", "1", state="new")}},
                {
                    "Update": {
                        "TableName": table,
                        "Key": {"pk": {"S": "A"}, "sk": {"S": "1"}},
                        "UpdateExpression": "SET #s = :after",
                        "ExpressionAttributeNames": {"#s": "state"},
                        "ExpressionAttributeValues": {":after": {"S": "after"}},
                    }
                },
                {"Delete": {"TableName": table, "Key": {"pk": {"S": "B"}, "sk": {"S": "1"}}}},
                {
                    "Put": {
                        "TableName": table,
                        "Item": put("C", "1", state="again"),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
            ]
        )

    # THEN DynamoDB's cancellation, with a reason per operation, and nothing of it happened
    error = raised.value.response
    assert error["Error"]["Code"] == "TransactionCanceledException"
    assert [reason["Code"] for reason in error["CancellationReasons"]] == [
        "None",
        "None",
        "None",
        "ConditionalCheckFailed",
    ]
    assert item(table, "N", "1") is None
    assert item(table, "A", "1") == put("A", "1", state="before")
    assert item(table, "B", "1") == put("B", "1", state="kept")
    assert item(table, "C", "1") == put("C", "1", state="exists")
    assert stream_length(table) == before  # a cancelled transaction leaves no stream record


def test_two_operations_on_one_item_are_refused_and_change_nothing(table):
    ddb = boto3.client("dynamodb")
    with pytest.raises(ClientError) as raised:
        ddb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": table, "Item": put("D", "1", state="one")}},
                {"Put": {"TableName": table, "Item": put("D", "1", state="two")}},
            ]
        )
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    assert item(table, "D", "1") is None


def test_a_transaction_copies_what_it_touches_not_the_table(table, monkeypatch):
    # GIVEN a table of 2,000 items, and every deep copy made while a transaction runs counted
    from moto.dynamodb.models.table import Table

    ddb = boto3.client("dynamodb")
    for start in range(0, 2000, 25):
        ddb.batch_write_item(
            RequestItems={
                table: [{"PutRequest": {"Item": put("BULK", f"{n:05}")}} for n in range(start, start + 25)]
            }
        )
    copied: list[type] = []
    deepcopy = moto_fidelity.copy.deepcopy

    def counting_deepcopy(value, *args):
        copied.append(type(value))
        return deepcopy(value, *args)

    monkeypatch.setattr(moto_fidelity.copy, "deepcopy", counting_deepcopy)

    # WHEN a transaction of 10 items runs
    ddb.transact_write_items(
        TransactItems=[{"Put": {"TableName": table, "Item": put("T", f"{n}")}} for n in range(10)]
    )

    # THEN it backed up the 10 (absent) items it wrote, and never a table
    assert Table not in copied
    assert copied.count(type(None)) == 10


def test_concurrent_writes_and_scans_never_see_a_table_mid_change(table):
    # GIVEN writers adding new partitions while scans walk the table (moto iterates its dict of partitions)
    errors: list[BaseException] = []
    done = threading.Event()

    def writer(number: int) -> None:
        ddb = boto3.client("dynamodb")
        try:
            for n in range(300):
                ddb.put_item(TableName=table, Item=put(f"W#{number}#{n}", "1"))
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    def scanner() -> None:
        ddb = boto3.client("dynamodb")
        try:
            while not done.is_set():
                ddb.scan(TableName=table, Select="COUNT")
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    scanners = [threading.Thread(target=scanner) for _ in range(2)]
    for thread in writers + scanners:
        thread.start()
    for thread in writers:
        thread.join(120)
    done.set()
    for thread in scanners:
        thread.join(120)

    # THEN no request failed, and every write is there
    assert not any(thread.is_alive() for thread in writers + scanners)
    assert errors == []
    assert boto3.client("dynamodb").scan(TableName=table, Select="COUNT")["Count"] >= 1200


# --- streams: records and shard iterators expire, so a long-running local stack does not grow ----------


def stream_records(table: str) -> tuple[list[dict], int]:
    """Every record from TRIM_HORIZON, and the shard's starting sequence number."""
    streams = boto3.client("dynamodbstreams")
    arn = boto3.client("dynamodb").describe_table(TableName=table)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    start = int(shard["SequenceNumberRange"]["StartingSequenceNumber"])
    return streams.get_records(ShardIterator=iterator)["Records"], start


def test_stream_records_older_than_the_retention_are_trimmed_and_numbers_continue(table, monkeypatch):
    ddb = boto3.client("dynamodb")
    for n in range(5):
        ddb.put_item(TableName=table, Item=put("R", str(n)))
    records, start = stream_records(table)
    assert len(records) == 5
    last = int(records[-1]["dynamodb"]["SequenceNumber"])
    # WHEN the records are older than the retention and another write comes
    monkeypatch.setenv("LOCAL_STREAM_RETENTION_SECONDS", "0.2")
    time.sleep(0.3)
    ddb.put_item(TableName=table, Item=put("R", "new"))
    # THEN only the new record is kept; its number follows the last one, and TRIM_HORIZON starts at it
    records, new_start = stream_records(table)
    assert [r["dynamodb"]["Keys"]["sk"]["S"] for r in records] == ["new"]
    assert int(records[0]["dynamodb"]["SequenceNumber"]) == last + 1 == new_start
    assert new_start == start + 5


def test_a_cancelled_transaction_after_a_trim_takes_back_only_its_own_records(table, monkeypatch):
    ddb = boto3.client("dynamodb")
    ddb.put_item(TableName=table, Item=put("T", "old"))
    monkeypatch.setenv("LOCAL_STREAM_RETENTION_SECONDS", "0.2")
    time.sleep(0.3)
    ddb.put_item(TableName=table, Item=put("T", "kept"))  # trims "old"
    with pytest.raises(ClientError):
        ddb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": table, "Item": put("T", "x")}},
                {
                    "Put": {
                        "TableName": table,
                        "Item": put("T", "kept"),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
            ]
        )
    records, _ = stream_records(table)
    assert [r["dynamodb"]["Keys"]["sk"]["S"] for r in records] == ["kept"]
    assert item(table, "T", "x") is None


def test_shard_iterators_are_forgotten_after_their_lifetime(table, monkeypatch):
    from moto.dynamodbstreams.models import dynamodbstreams_backends

    backend = dynamodbstreams_backends["123456789012"]["us-east-1"]
    for _ in range(20):
        stream_records(table)
    assert len(backend.shard_iterators) >= 40  # moto keeps each one handed out (two per read here)
    monkeypatch.setattr(moto_fidelity, "ITERATOR_LIFETIME_SECONDS", 0.0)
    stream_records(table)
    assert len(backend.shard_iterators) <= 2  # only those of the last read are left


def test_records_are_kept_and_dated_in_utc_whatever_the_machines_time_zone(table, monkeypatch):
    # GIVEN a machine in Tokyo (moto stamps records with naive UTC times)
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        ddb = boto3.client("dynamodb")
        before = time.time()
        ddb.put_item(TableName=table, Item=put("Z", "1"))
        ddb.put_item(TableName=table, Item=put("Z", "2"))  # a write, so the retention is applied
        records, _ = stream_records(table)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    # THEN neither record was taken for nine hours old, and their creation time is now
    assert [r["dynamodb"]["Keys"]["sk"]["S"] for r in records] == ["1", "2"]
    created = records[0]["dynamodb"]["ApproximateCreationDateTime"].timestamp()
    assert before - 5 <= created <= time.time() + 5


EVERY_TYPE = {
    "s": {"S": "text é ✓"},
    "n": {"N": "12.50"},
    "b": {"B": b"\x00\xffbinary"},
    "ss": {"SS": ["a", "b"]},
    "ns": {"NS": ["1", "2.5"]},
    "bs": {"BS": [b"\x01", b"\x02"]},
    "m": {"M": {"inner": {"L": [{"S": "x"}, {"N": "1"}, {"NULL": True}, {"BOOL": False}]}}},
    "l": {"L": [{"M": {"deep": {"B": b"\x03"}}}]},
    "null": {"NULL": True},
    "bool": {"BOOL": True},
}


def answers(table: str, run: str) -> list[tuple[str, object]]:
    """Every item operation the local stack answers as plain JSON, as raw answers ('<run>' in keys and
    values is replaced, so two runs on their own items compare)."""
    ddb = boto3.client("dynamodb")
    bodies: list[tuple[str, object]] = []

    def keep(http_response, model, **_):
        body = json.loads(http_response.content.decode().replace(run, "RUN"))
        if model.name == "Scan":  # the other run's items are in the table too
            body["ScannedCount"] = type(body["ScannedCount"]).__name__
        bodies.append((model.name, body))

    ddb.meta.events.register("after-call.dynamodb", keep)
    pk = f"FIDELITY#{run}"
    total = {"ReturnConsumedCapacity": "TOTAL"}
    of_partition = {"ExpressionAttributeValues": {":pk": {"S": pk}}}
    add_one = {"UpdateExpression": "ADD c :one", "ExpressionAttributeValues": {":one": {"N": "1"}}}
    ddb.put_item(TableName=table, Item={**put(pk, "1"), **EVERY_TYPE}, **total)
    changed = {**put(pk, "1"), **EVERY_TYPE, "n": {"N": "2"}}
    ddb.put_item(TableName=table, Item=changed, ReturnValues="ALL_OLD")
    ddb.get_item(TableName=table, Key=put(pk, "1"), ConsistentRead=True, **total)
    ddb.get_item(TableName=table, Key=put(pk, "absent"))
    ddb.update_item(
        TableName=table,
        Key=put(pk, "1"),
        UpdateExpression="SET #n = #n + :one, added = :added REMOVE #null",
        ExpressionAttributeNames={"#n": "n", "#null": "null"},
        ExpressionAttributeValues={":one": {"N": "1"}, ":added": {"B": b"\x04"}},
        ReturnValues="ALL_NEW",
        **total,
    )
    ddb.update_item(TableName=table, Key=put(pk, "2"), ReturnValues="UPDATED_OLD", **add_one)
    batch = [{"PutRequest": {"Item": {**put(pk, f"b{n}"), **EVERY_TYPE}}} for n in range(3)]
    ddb.batch_write_item(RequestItems={table: batch}, **total)
    keys = [put(pk, f"b{n}") for n in range(3)] + [put(pk, "none")]
    ddb.batch_get_item(RequestItems={table: {"Keys": keys}}, **total)
    ddb.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": table, "Item": {**put(pk, "t"), **EVERY_TYPE}}},
            {"Update": {"TableName": table, "Key": put(pk, "2"), **add_one}},
            {
                "ConditionCheck": {
                    "TableName": table,
                    "Key": put(pk, "1"),
                    "ConditionExpression": "attribute_exists(pk)",
                }
            },
        ],
        **total,
    )
    ddb.transact_get_items(TransactItems=[{"Get": {"TableName": table, "Key": put(pk, "t")}}], **total)
    ddb.query(TableName=table, KeyConditionExpression="pk = :pk", Limit=2, **of_partition, **total)
    ddb.query(TableName=table, KeyConditionExpression="pk = :pk", Select="COUNT", **of_partition)
    ddb.scan(TableName=table, FilterExpression="pk = :pk", **of_partition, **total)
    ddb.delete_item(TableName=table, Key=put(pk, "t"), ReturnValues="ALL_OLD", **total)
    ddb.delete_item(TableName=table, Key=put(pk, "absent"))
    return bodies


def test_item_operations_answer_as_moto_s_generic_serializer_does(table, monkeypatch):
    """moto_fidelity writes item operations' answers as JSON directly, for speed: every answer, with every
    attribute type, is the one moto's generic serializer gives."""
    from moto.core.responses import BaseResponse

    generic_serializer = BaseResponse.serialized
    serialized_generically: list[str] = []

    def spy(handler, action_result):
        serialized_generically.append(handler._get_action())
        return generic_serializer(handler, action_result)

    monkeypatch.setattr(BaseResponse, "serialized", spy)
    direct = answers(table, "direct")
    assert serialized_generically == []  # every answer above took the direct way
    monkeypatch.setattr(moto_fidelity, "PLAIN_JSON_ACTIONS", frozenset())
    generic = answers(table, "sorted")  # as long as "direct": capacity units count key bytes
    assert [name for name, _ in direct] == [name for name, _ in generic]
    assert len(direct) == 15 and len(serialized_generically) == 15
    for (name, fast), (_, slow) in zip(direct, generic, strict=True):
        assert fast == slow, name
