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
    records = []
    for iterator in shard_iterators(streams, stream_arn).values():
        while iterator:
            response = streams.get_records(ShardIterator=iterator, Limit=1000)
            records.extend(response.get("Records", []))
            if not response.get("Records"):
                break
            iterator = response.get("NextShardIterator")
    for record in records:
        record.setdefault("eventSourceARN", stream_arn)
    return {"Records": jsonable(records)}
