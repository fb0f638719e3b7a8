"""Where moto answers less than AWS does, or more slowly than a local stack can bear.

moto's API Gateway v2 echoes a custom domain's configuration back as it was sent, so the fields AWS adds
(the target hostname the tracking CNAME must point at, the Route 53 hosted zone, the status) are missing,
and it does not implement UpdateDomainName at all. Our code never invents those values (it reports the
state as unknown without them), so the local stack and the tests of the full state machine teach moto to
answer as AWS documents:

- a regional custom domain's target is `d-<10 characters>.execute-api.<region>.amazonaws.com`, random per
  domain, with the region's API Gateway hosted zone and the status AVAILABLE;
- UpdateDomainName replaces the certificate of an existing custom domain and keeps its target.

moto's DynamoDB backs up every table a transaction names with a deep copy before it starts (stream records
included), so a transaction costs as much as the whole table, and each message stored costs more than the
last: a 1,000-recipient submission (ten transactions of 100 items) ran out of memory. DynamoDB itself
isolates each transaction and serializes it with every other write. Here:

- a transaction backs up only the items it touches, and the length of each table's stream, and on
  cancellation puts exactly those back (a cancelled transaction leaves no stream record, as on AWS);
- every call into the DynamoDB backend holds one lock, so a scan or query never iterates a table while
  another request's write changes it ("dictionary changed size during iteration" under concurrent opens).

moto keeps every stream record and every shard iterator it ever handed out, so a local stack's memory grew
with each open (about 40 KB an open, most of it stream records already delivered) and with each poll. On
AWS a stream record is trimmed after 24 hours and a shard iterator expires after 15 minutes. Here:

- a stream record is trimmed once it is STREAM_RETENTION_SECONDS old (300 s, or
  LOCAL_STREAM_RETENTION_SECONDS): a local consumer reads within a second, and the shard's starting
  sequence number moves on as on AWS, so TRIM_HORIZON starts at the oldest record kept;
- a shard iterator is forgotten 15 minutes after it was handed out.

And costs of moto's that AWS does not have, measured with thousands of opens through the local stack:

- a Query on the table sorted every item of the table to find one partition's, so each stats or events
  read cost more as opens accumulated (the read side fell from 236 to 29 opens a second over 8,000 opens):
  it reads the partition it names, in the same order;
- every request listed moto's package folder on disk to route it (a tenth of moto's CPU): listed once;
- GetRecords answers went through moto's generic response serializer (a sixth): a stream's records,
  already in DynamoDB's JSON, are written as JSON directly;
- so are the answers of DynamoDB's item operations (PutItem, BatchGetItem, TransactWriteItems...): the
  generic serializer walked botocore's output shape for every attribute of every item, 38% of moto's CPU
  under opens. Their results are already in the wire's shape (tests/unit/test_moto_fidelity_dynamodb.py
  compares both answers for every attribute type).

And SQS:

- moto's SendMessage read the queue's attributes for each message (to see whether a FIFO queue
  deduplicates by content), and the attributes count the queue's messages, checking the clock for each:
  sending cost as much as the queue held, so queueing a 1,000-recipient message's send jobs took 7 s
  (70 ms for each batch of 10). A standard queue has no content-based deduplication: its messages are
  queued without reading the attributes (FIFO queues keep moto's path).

`apply()` is idempotent and patches moto in this process (in-process mocks and a ThreadedMotoServer alike).
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import os
import secrets
import string
import threading
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

# API Gateway's regional endpoints' hosted zones (AWS General Reference, "Amazon API Gateway endpoints").
REGIONAL_HOSTED_ZONES = {"us-east-1": "Z1UJRXOUMOOFQ8"}
_ALPHABET = string.ascii_lowercase + string.digits
_applied = False


def _target(region: str) -> str:
    suffix = "".join(secrets.choice(_ALPHABET) for _ in range(10))
    return f"d-{suffix}.execute-api.{region}.amazonaws.com"


def apply() -> None:
    global _applied
    if _applied:
        return
    from moto.apigatewayv2 import models, responses

    original_init = models.DomainName.__init__

    def init(self, domain_name, domain_name_configurations, mutual_tls_authentication, tags, backend):
        original_init(self, domain_name, domain_name_configurations, mutual_tls_authentication, tags, backend)
        for configuration in self.domain_name_configurations:
            if configuration.get("endpointType", "REGIONAL") == "REGIONAL":
                configuration.setdefault("apiGatewayDomainName", _target(backend.region_name))
                zone = REGIONAL_HOSTED_ZONES.get(backend.region_name)
                if zone:
                    configuration.setdefault("hostedZoneId", zone)
                configuration.setdefault("domainNameStatus", "AVAILABLE")

    def update_domain_name(self, domain_name: str, domain_name_configurations: list[dict]):
        domain = self.get_domain_name(domain_name)
        kept = {"apiGatewayDomainName", "hostedZoneId", "domainNameStatus"}
        for current, change in zip(
            domain.domain_name_configurations, domain_name_configurations, strict=False
        ):
            current.update({key: value for key, value in change.items() if key not in kept})
        return domain

    def update_domain_name_response(self):
        params = json.loads(self.body)
        domain = self.apigatewayv2_backend.update_domain_name(
            self.path.split("/")[-1], params.get("domainNameConfigurations", [])
        )
        return 200, {}, json.dumps(domain.to_json())

    models.DomainName.__init__ = init
    models.ApiGatewayV2Backend.update_domain_name = update_domain_name
    responses.ApiGatewayV2Response.update_domain_name = update_domain_name_response
    _apply_dynamodb()
    _apply_stream_retention()
    _apply_server_speed()
    _apply_partition_query()
    _apply_sqs_send()
    _applied = True


# --- DynamoDB: transactions that cost what they touch, and one writer at a time ----------------------------

# Every backend method a request reaches, run one at a time (reentrant: transactions call put_item).
_DYNAMODB_LOCKED = (
    "put_item", "get_item", "update_item", "delete_item", "query", "scan", "batch_get_item",
    "batch_write_item", "transact_get_items", "transact_write_items", "execute_statement",
    "execute_transaction", "batch_execute_statement",
)  # fmt: skip
_dynamodb_lock = threading.RLock()


def _locked(method):
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        with _dynamodb_lock:
            return method(*args, **kwargs)

    return call


def _apply_dynamodb() -> None:
    from moto.dynamodb import models

    models.DynamoDBBackend.transact_write_items = _transact_write_items
    for name in _DYNAMODB_LOCKED:
        method = getattr(models.DynamoDBBackend, name, None)
        if method is not None:
            setattr(models.DynamoDBBackend, name, _locked(method))


def _transact_write_items(backend, transact_items: list[dict[str, Any]]) -> None:
    """moto's TransactWriteItems (the same checks, operations and errors), with an item-level backup."""
    from moto.dynamodb.comparisons import get_filter_expression
    from moto.dynamodb.exceptions import (
        ConditionalCheckFailed,
        MockValidationException,
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )
    from moto.dynamodb.models.dynamo_type import DynamoType

    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    backups: dict[tuple[str, Any, Any], Any] = {}  # (table, hash, range) -> the item before, or None
    stream_ends: dict[str, int] = {}  # table -> the sequence number its next stream record would get
    touched: set[tuple[str, str]] = set()

    def roll_back() -> None:
        for (table_name, hash_value, range_value), item in backups.items():
            table = backend.tables[table_name]
            if range_value is None:
                if item is None:
                    table.items.pop(hash_value, None)
                else:
                    table.items[hash_value] = item
            elif item is None:
                table.items[hash_value].pop(range_value, None)
            else:
                table.items[hash_value][range_value] = item
        for table_name, end in stream_ends.items():
            shard = backend.tables[table_name].stream_shard
            del shard.items[max(0, end - shard.starting_sequence_number) :]

    errors: list[tuple[str | None, str | None, Any]] = []
    for operation in transact_items:
        original_item = None
        if len(operation) > 1:
            raise TransactWriteSingleOpException
        try:
            op_type, op = next(iter(operation.items()))
            if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                raise ValueError("Unsupported transaction operation")
            table_name = op["TableName"]
            table = backend.get_table(table_name)
            key = op["Item"] if op_type == "Put" else op["Key"]
            key = {name: key[name] for name in (table.hash_key_attr, table.range_key_attr) if name}
            identity = (str(table_name), str(dict(sorted(key.items()))))
            if identity in touched:
                raise MultipleTransactionsException()
            touched.add(identity)
            hash_value = DynamoType(key[table.hash_key_attr])
            range_value = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
            current = backend.get_item(table_name, key)
            if op_type != "ConditionCheck":
                backups[(table_name, hash_value, range_value)] = copy.deepcopy(current)
                if table.stream_shard is not None:
                    shard = table.stream_shard
                    stream_ends.setdefault(table_name, shard.starting_sequence_number + len(shard.items))
            condition_expression = op.get("ConditionExpression")
            names = op.get("ExpressionAttributeNames")
            values = op.get("ExpressionAttributeValues")
            if condition_expression is not None:
                condition = get_filter_expression(condition_expression, names, values)
                if not condition.expr(current):
                    if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                        original_item = current.to_json()["Attributes"]
                    raise ConditionalCheckFailed(item=original_item)
            conditions = {
                "condition_expression": condition_expression,
                "expression_attribute_names": names,
                "expression_attribute_values": values,
            }
            if op_type == "Put":
                backend.put_item(table_name, op["Item"], **conditions)
            elif op_type == "Delete":
                backend.delete_item(table_name, key, **conditions)
            elif op_type == "Update":
                backend.update_item(table_name, key, update_expression=op["UpdateExpression"], **conditions)
            errors.append((None, None, None))
        except (MultipleTransactionsException, MockValidationException):
            roll_back()
            raise
        except ConditionalCheckFailed as error:
            errors.append(("ConditionalCheckFailed", str(error.message), original_item))
        except Exception as error:  # as moto: every other failure cancels the transaction, with its name
            errors.append((type(error).__name__, str(error), original_item))
    if any(code is not None for code, _, _ in errors):
        roll_back()
        raise TransactionCanceledException(errors)


# --- DynamoDB Streams: records and iterators that expire, as on AWS ----------------------------------------

STREAM_RETENTION_SECONDS = 300.0
ITERATOR_LIFETIME_SECONDS = 15 * 60.0


def _retention_seconds() -> float:
    try:
        return float(os.environ.get("LOCAL_STREAM_RETENTION_SECONDS", STREAM_RETENTION_SECONDS))
    except ValueError:
        return STREAM_RETENTION_SECONDS


def _utc_seconds(moment: datetime) -> float:
    """moto stamps records with naive UTC datetimes; datetime.timestamp() would read them as local time
    (nine hours off in Tokyo, and every record would look expired)."""
    return (moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment).timestamp()


def trim_stream(shard: Any, now: float) -> int:
    """Drop the shard's records older than the retention; the number dropped. Records are appended in
    time order, so the old ones are a prefix, and its length moves the starting sequence number on."""
    horizon = now - _retention_seconds()
    old = 0
    for record in shard.items:
        if _utc_seconds(record.record["dynamodb"]["ApproximateCreationDateTime"]) >= horizon:
            break
        old += 1
    if old:
        del shard.items[:old]
        shard.starting_sequence_number += old
    return old


def _apply_stream_retention() -> None:
    from moto.dynamodb.models.table import StreamShard
    from moto.dynamodbstreams.models import DynamoDBStreamsBackend, ShardIterator

    original_add = StreamShard.add

    def add(shard: Any, old: Any, new: Any) -> None:
        original_add(shard, old, new)
        trim_stream(shard, time.time())  # stops at the first record young enough: usually the first

    original_iterator_init = ShardIterator.__init__

    def iterator_init(iterator: Any, streams_backend: Any, *args: Any, **kwargs: Any) -> None:
        original_iterator_init(iterator, streams_backend, *args, **kwargs)
        handed_out = streams_backend.__dict__.setdefault("handed_out", deque())
        handed_out.append((time.monotonic(), iterator.arn))

    def forget_expired(backend: Any) -> None:
        handed_out = backend.__dict__.get("handed_out") or deque()
        horizon = time.monotonic() - ITERATOR_LIFETIME_SECONDS
        while handed_out and handed_out[0][0] < horizon:
            backend.shard_iterators.pop(handed_out.popleft()[1], None)

    original_get_shard_iterator = DynamoDBStreamsBackend.get_shard_iterator
    original_get = ShardIterator.get

    def get_shard_iterator(backend: Any, *args: Any, **kwargs: Any) -> Any:
        with _dynamodb_lock:
            forget_expired(backend)
            return original_get_shard_iterator(backend, *args, **kwargs)

    def get(iterator: Any, limit: int = 1000) -> dict[str, Any]:
        # Under the table's lock: a trim moves the records and the starting sequence number together.
        with _dynamodb_lock:
            forget_expired(iterator.streams_backend)
            return original_get(iterator, limit)

    StreamShard.add = add
    ShardIterator.__init__ = iterator_init
    DynamoDBStreamsBackend.get_shard_iterator = get_shard_iterator
    ShardIterator.get = get


# --- moto's server: the same answers, for less CPU --------------------------------------------------------


def _epoch_seconds(value: Any) -> float:
    if isinstance(value, datetime):
        return _utc_seconds(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# Item operations whose results moto builds as DynamoDB's JSON answer (attribute values already typed).
PLAIN_JSON_ACTIONS = frozenset(
    {
        "PutItem", "GetItem", "UpdateItem", "DeleteItem", "BatchGetItem", "BatchWriteItem",
        "TransactGetItems", "TransactWriteItems", "Query", "Scan",
    }
)  # fmt: skip


def _apply_server_speed() -> None:
    from moto import backends
    from moto.core.responses import BaseResponse
    from moto.core.utils import get_service_model
    from moto.dynamodb.responses import DynamoHandler
    from moto.dynamodbstreams.responses import DynamoDBStreamsHandler

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: iter(modules)

    def get_records(handler: Any) -> str:
        limit = handler._get_param("Limit")
        result = handler.backend.get_records(
            handler._get_param("ShardIterator"), 1000 if limit is None else limit
        )
        return json.dumps(result, default=_epoch_seconds)

    DynamoDBStreamsHandler.get_records = get_records

    @functools.cache
    def members(action: str) -> frozenset[str]:
        """The answer's top-level members: moto's results carry a few more (the serializer drops them)."""
        return frozenset(get_service_model("dynamodb").operation_model(action).output_shape.members)

    def serialized(handler: Any, action_result: Any) -> Any:
        result = action_result.result
        action = handler._get_action()
        if isinstance(result, dict) and action in PLAIN_JSON_ACTIONS:
            wanted = members(action)
            answer = _without_nones({key: value for key, value in result.items() if key in wanted})
            try:
                body = json.dumps(answer, default=_blob)
            except TypeError:  # a type only the generic serializer knows
                return BaseResponse.serialized(handler, action_result)
            headers = {"Content-Type": "application/x-amz-json-1.0", **handler.response_headers}
            return 200, headers, body
        return BaseResponse.serialized(handler, action_result)

    DynamoHandler.serialized = serialized


def _blob(value: Any) -> str:
    """Binary attribute values (B, BS), as the wire carries them: base64."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _without_nones(value: Any) -> Any:
    """What the serializer leaves out: members moto set to None."""
    if isinstance(value, dict):
        return {key: _without_nones(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nones(item) for item in value]
    return value


def _apply_partition_query() -> None:
    from moto.dynamodb.models.table import Table

    original_query = Table.query

    def query(table: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
        if index_name or hash_key is None:
            return original_query(table, hash_key, *args, **kwargs)
        partition = table.items.get(hash_key)

        def partition_items() -> list[Any]:
            if partition is None:
                return []
            items = list(partition.values()) if table.range_key_attr else [partition]
            return sorted(items, key=lambda x: (x.hash_key, x.range_key) if x.range_key else x.hash_key)

        # Under the DynamoDB lock (DynamoDBBackend.query holds it): the instance attribute shadows the
        # method for this one call.
        table.all_items = partition_items
        try:
            return original_query(table, hash_key, *args, **kwargs)
        finally:
            del table.all_items

    Table.query = query


# --- SQS: sending costs one message, not the whole queue -----------------------------------------------


def _apply_sqs_send() -> None:
    from moto.sqs import models
    from moto.sqs.exceptions import InvalidParameterValue

    original = models.SQSBackend.send_message

    def send_message(
        self: Any,
        queue_name: str,
        message_body: str,
        message_attributes: dict[str, Any] | None = None,
        delay_seconds: int | None = None,
        deduplication_id: str | None = None,
        group_id: str | None = None,
        system_attributes: dict[str, Any] | None = None,
        validate_group_id: bool = True,
    ) -> Any:
        queue = self.get_queue(queue_name)
        if queue.fifo_queue:
            return original(
                self,
                queue_name,
                message_body,
                message_attributes,
                delay_seconds,
                deduplication_id,
                group_id,
                system_attributes,
                validate_group_id,
            )
        self._validate_message(
            queue,
            message_body=message_body,
            delay_seconds=int(delay_seconds or 0),
            deduplication_id=deduplication_id,
            group_id=group_id,
            validate_group_id=validate_group_id,
        )
        delay = int(delay_seconds) if delay_seconds is not None else int(queue.delay_seconds)
        if delay > models.MAXIMUM_MESSAGE_DELAY:
            raise InvalidParameterValue(
                f"Value {delay} for parameter DelaySeconds is invalid. "
                "Reason: DelaySeconds must be >= 0 and <= 900."
            )
        message = models.Message(str(models.random.uuid4()), message_body, system_attributes)
        if deduplication_id is not None:
            message.deduplication_id = deduplication_id
        if group_id is not None:
            message.group_id = group_id
        if message_attributes:
            message.message_attributes = message_attributes
        message.mark_sent(delay_seconds=delay)
        queue.add_message(message)
        return message

    models.SQSBackend.send_message = send_message
