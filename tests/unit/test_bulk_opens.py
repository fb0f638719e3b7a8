"""The stream consumer records a batch's raw opens in a few transactions
(opentracking.reporting.bulk_opens), with
exactly what the one-by-one path records: every event, the first human open of each copy as its unique
open, the counters' sums; a replay changes nothing, and what the bulk path cannot join is left to the
one-by-one path."""

from __future__ import annotations

from collections import Counter

import boto3
import pytest

from devstack.user_agents import CASES
from opentracking.core.aws import client
from opentracking.reporting import consumer

OUTLOOK, SAFARI_IOS = CASES[0][0], CASES[2][0]
APPLE_PREFETCH = "Mozilla/5.0"  # Apple Mail Privacy Protection: a machine open

RECIPIENTS = [f"r{n}@example.net" for n in range(30)]


@pytest.fixture
def transactions():
    """How many TransactWriteItems calls the consumer makes (counted on the library's own client)."""
    calls = Counter()
    ddb = client("dynamodb")

    def count(**_: object) -> None:
        calls["transact"] += 1

    ddb.meta.events.register("before-call.dynamodb.TransactWriteItems", count)
    yield calls
    ddb.meta.events.unregister("before-call.dynamodb.TransactWriteItems", count)


def table(aws):
    return boto3.resource("dynamodb").Table(aws.ref("DataTable"))


def opens_plan() -> list[tuple[str, str, str]]:
    """(recipient, user agent, method): machine opens first for some copies, several opens for others."""
    plan = []
    for n, recipient in enumerate(RECIPIENTS):
        if n % 3 == 0:
            plan.append((recipient, APPLE_PREFETCH, "GET"))  # a prefetch, then the reader
        plan.append((recipient, OUTLOOK if n % 2 else SAFARI_IOS, "GET"))
        if n % 4 == 0:
            plan.append((recipient, OUTLOOK, "GET"))  # a repeat open
        if n % 5 == 0:
            plan.append((recipient, OUTLOOK, "HEAD"))  # a scanner's check
    return plan


def test_a_batch_of_opens_is_recorded_in_a_few_transactions_with_exact_counts(world, aws, transactions):
    world.send(", ".join(RECIPIENTS), tags=("Launch", "Weekly"))
    for recipient in RECIPIENTS:
        world.backdate(recipient)
    plan = opens_plan()
    for recipient, agent, method in plan:
        world.open(recipient, user_agent=agent, method=method)

    # WHEN the stream is consumed as one batch
    assert world.consume() == {"batchItemFailures": []}

    # THEN every open is an event, and the counters add up
    machine = sum(1 for _, agent, method in plan if agent == APPLE_PREFETCH or method == "HEAD")
    human_copies = {r for r, agent, method in plan if agent != APPLE_PREFETCH and method != "HEAD"}
    assert len(world.opened()) == len(plan)
    expected = {
        "accepted_total": len(RECIPIENTS),
        "opened_total": len(plan),
        "opened_machine_total": machine,
        "opened_unique": len(human_copies),
    }
    assert world.counters() == expected
    assert world.counters("launch") == expected == world.counters("weekly")
    # AND each copy's unique open is its first human open, in stream order
    items = table(aws).scan()["Items"]
    for recipient in human_copies:
        copy_pk = world.copy(recipient)["pk"]
        marker = next(i for i in items if i["pk"] == copy_pk and i["sk"] == "UNIQUE#opened")
        raw_opens = sorted(
            (i for i in items if i["pk"] == copy_pk and i["sk"].startswith("OPEN#")), key=lambda i: i["sk"]
        )
        first_human = next(
            i for i in raw_opens if i["user_agent"] != APPLE_PREFETCH and i.get("method", "GET") != "HEAD"
        )
        assert marker["event_id"] == consumer.event_id_for(first_human["pk"], first_human["sk"])
    # AND it took a few transactions, where one by one it takes one or two per open (and one per acceptance)
    assert transactions["transact"] <= len(RECIPIENTS) + 5

    # WHEN the same batch is delivered again (streams deliver at least once)
    before = (sorted(e["id"] for e in world.opened()), world.counters(), world.counters("launch"))
    assert world.consume() == {"batchItemFailures": []}
    # THEN nothing changes
    assert (sorted(e["id"] for e in world.opened()), world.counters(), world.counters("launch")) == before


def test_an_open_whose_copy_is_gone_leaves_the_rest_to_the_one_by_one_path(world, aws):
    world.send(", ".join(RECIPIENTS[:6]))
    for recipient in RECIPIENTS[:6]:
        world.backdate(recipient)
        world.open(recipient)
    # GIVEN the third copy expired before its open was consumed
    gone = world.copy(RECIPIENTS[2])["pk"]
    table(aws).delete_item(Key={"pk": gone, "sk": "COPY"})
    # WHEN the batch is consumed
    assert world.consume() == {"batchItemFailures": []}
    # THEN the other five opens are events and counted once; the orphan left nothing behind
    assert sorted(e["recipient"] for e in world.opened()) == sorted(RECIPIENTS[:2] + RECIPIENTS[3:6])
    assert world.counters()["opened_total"] == 5 and world.counters()["opened_unique"] == 5
    left = [i["sk"] for i in table(aws).scan()["Items"] if i["pk"] == gone]
    assert not [sk for sk in left if sk.startswith("OPEN#") or "#opened#" in sk]
