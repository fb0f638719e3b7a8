"""Reading a DynamoDB table's stream and shaping its records the way Lambda delivers them."""

from __future__ import annotations

from datetime import datetime

import boto3


def jsonable(value: object) -> object:
    """Stream records from boto3 carry datetimes; Lambda delivers epoch numbers."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.timestamp()
    return value


def shard_iterators(streams, stream_arn: str, position: str = "TRIM_HORIZON") -> dict[str, str]:
    shards = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]
    return {
        shard["ShardId"]: streams.get_shard_iterator(
            StreamArn=stream_arn, ShardId=shard["ShardId"], ShardIteratorType=position
        )["ShardIterator"]
        for shard in shards
    }


def read_all(stream_arn: str) -> dict:
    """Every record currently in the stream, as one Lambda event (tests replay it at will)."""
    streams = boto3.client("dynamodbstreams")
    by_sequence: dict[str, dict] = {}
    for iterator in shard_iterators(streams, stream_arn).values():
        for _ in range(10_000):  # bounded; each page moves the iterator on
            response = streams.get_records(ShardIterator=iterator, Limit=1000)
            page = response.get("Records", [])
            for record in page:
                by_sequence.setdefault(record["dynamodb"]["SequenceNumber"], record)
            iterator = response.get("NextShardIterator")
            if len(page) < 1000 or not iterator:
                break
    records = list(by_sequence.values())
    for record in records:
        record.setdefault("eventSourceARN", stream_arn)
    return {"Records": jsonable(records)}
