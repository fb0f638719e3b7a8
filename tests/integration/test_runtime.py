"""The local runtime runs a function's overlapping invocations on separate instances, as Lambda does, up to
its concurrency, and never two invocations on one instance at once."""

from __future__ import annotations

import itertools
import json
import threading

from devstack.runtime import Function


def overlapping(log: list[tuple[float, float, int, int]]) -> int:
    """The most invocations that were running at one moment."""
    edges = sorted([(start, 1) for start, _, _, _ in log] + [(end, -1) for _, end, _, _ in log])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def invoke_at_once(concurrency: int, calls: int, hold: float) -> list[tuple[float, float, int, int]]:
    """`calls` invocations of the slow function from as many threads; what each wrote down."""
    function = Function(
        "Slow", "tests/integration/fixtures/slow", "app.lambda_handler", 128, 3.0, concurrency=concurrency
    )
    log: list[tuple[float, float, int, int]] = []
    event = {"hold": hold, "log": log}
    threads = [threading.Thread(target=function.invoke, args=(event,)) for _ in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return log


def test_overlapping_invocations_get_instances_of_their_own_up_to_the_limit():
    log = invoke_at_once(concurrency=3, calls=7, hold=0.3)
    assert len(log) == 7
    # THEN at most three ran at once (and more than one did), on at most three instances
    assert 1 < overlapping(log) <= 3
    instances = {instance for _, _, instance, _ in log}
    assert 1 < len(instances) <= 3
    # AND no instance served two invocations at once
    for instance in instances:
        own = sorted((start, end) for start, end, other, _ in log if other == instance)
        assert all(earlier[1] <= later[0] for earlier, later in itertools.pairwise(own))


def test_one_instance_serves_one_invocation_at_a_time():
    log = invoke_at_once(concurrency=1, calls=4, hold=0.05)
    assert len(log) == 4 and overlapping(log) == 1 and len({i for _, _, i, _ in log}) == 1


def json_documents(text: str) -> list[dict]:
    """Every JSON document printed, in order. Threads print a document and its newline in two writes, so
    two documents can share a line."""
    decoder, documents, at = json.JSONDecoder(), [], 0
    while (at := text.find("{", at)) != -1:
        document, at = decoder.raw_decode(text, at)
        documents.append(document)
    return documents


def test_instances_publish_their_own_metrics(capfd):
    """Powertools keeps one metric set per process; Lambda's instances are processes, the local ones are
    threads. Each instance must publish exactly what its own invocation added: before, one instance
    published another's metrics and the other then failed with "Must contain at least one metric"."""
    function = Function(
        "Metered", "tests/integration/fixtures/metered", "app.lambda_handler", 128, 3.0, concurrency=4
    )
    failures: list[BaseException] = []

    def call_many() -> None:
        for _ in range(10):
            try:
                function.invoke({"hold": 0.002})
            except Exception as exc:  # the test counts every failure
                failures.append(exc)

    threads = [threading.Thread(target=call_many) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    published = [document for document in json_documents(capfd.readouterr().out) if "Calls" in document]
    assert failures == []
    # One EMF document per invocation, each with its own single call
    assert len(published) == 60
    assert all(document["Calls"] == [1.0] for document in published)
