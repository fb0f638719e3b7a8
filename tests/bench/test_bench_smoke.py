"""The benchmarks run on tiny inputs and produce well-formed results. No timing is asserted here: only
shapes, and counts (the pixel's one AWS request per open).

The whole tiny bench runs once, as `make bench` runs it (`python -m bench --tiny`), in its own process: it
loads the handlers under each function's environment and patches botocore, which must not leak into the
other tests. Inside, AWS is answered in-process at the botocore layer; the read-side case starts moto
server on 127.0.0.1 and the cold-start case runs child processes. The pure helpers are tested in process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `bench` lives at the top of the repository
    sys.path.insert(0, str(ROOT))

ROW_KEYS = {"case", "metric", "value", "unit", "baseline", "ratio", "target", "met", "note"}
CASES = {
    "pixel": "pixel",
    "coldstart": "cold start",
    "injection": "injection",
    "submission": "submission",
    "delivery": "delivery",
    "readside": "read side",
    "cost": "cost",
    "counters": "counters @100k/s",
    "hostile": "hostile input",
    "localstack": "local stack",
}


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "latest.json"
    path = os.pathsep.join(str(ROOT / p) for p in ("layers/opentracking", "local", "."))
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--out", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    document = json.loads(out.read_text())
    return {"document": document, "stdout": completed.stdout, "markdown": out.with_suffix(".md").read_text()}


def rows_of(bench_run: dict, case: str) -> list[dict]:
    return [r for r in bench_run["document"]["rows"] if r["case"] == CASES[case]]


def raw_of(bench_run: dict, case: str) -> dict:
    return bench_run["document"]["cases"][case]["raw"]


def test_every_case_writes_well_formed_rows(bench_run):
    document = bench_run["document"]
    assert set(document) == {"machine", "tiny", "seconds", "rows", "cases"}
    assert document["tiny"] is True and set(document["cases"]) == set(CASES)
    for case, label in CASES.items():
        rows = rows_of(bench_run, case)
        assert rows, f"{case}: no rows"
        for r in rows:
            assert set(r) == ROW_KEYS
            assert isinstance(r["value"], int | float) or "not measured" in r["note"]
            assert r["met"] in (True, False, None)
            if r["target"] is None:
                assert r["met"] is None
        assert label in bench_run["stdout"]
    assert bench_run["markdown"].startswith("| case |")


def test_pixel_makes_exactly_one_aws_request_per_open(bench_run):
    raw = raw_of(bench_run, "pixel")
    # Warm: every open made one request, a PutItem, and read nothing.
    assert raw["requests_per_open"] == {"api_calls": 1.0, "http_requests": 1.0, "reads": 0.0, "writes": 1.0}
    assert raw["requests_warm"]["by_operation"] == {"dynamodb.PutItem": raw["warm_opens"]}
    # The first open in a fresh environment also fetched the signing keys, once.
    assert raw["requests_first_open"]["by_operation"] == {
        "dynamodb.PutItem": 1,
        "secretsmanager.GetSecretValue": 1,
    }
    for name in ("pixel", "floor"):
        assert raw["cpu"][name]["n"] >= 50 and raw["cpu"][name]["p50_us"] > 0
    # With DynamoDB failing or hanging: one attempt and one spill per open, every open answered.
    for fault in ("error", "hang"):
        measured = raw["failure_paths"][fault]
        assert measured["put_items_per_open"] == 1 and measured["spills_per_open"] == 1
        assert measured["attempts_per_open"] == 1
        assert 0 < measured["p50_ms"] <= measured["max_ms"]
    assert raw["failure_paths"]["hang"]["p50_ms"] >= 200  # the stub really waited for the read timeout


def test_cold_start_runs_the_pixel_and_the_floor_in_fresh_processes(bench_run):
    raw = raw_of(bench_run, "coldstart")
    assert raw["floor"]["total_ms"] > 0
    (run,) = raw["PixelFunction"]["runs"]
    assert run["status"] == 200
    assert run["requests"]["by_operation"] == {"dynamodb.PutItem": 1, "secretsmanager.GetSecretValue": 1}


def test_injection_compares_three_injectors_on_the_same_inputs(bench_run):
    raw = raw_of(bench_run, "injection")
    synthetic = next(e for e in raw["inputs"] if e["name"] == "synthetic 5 KB")
    assert set(synthetic["approaches"]) == {"inject", "email round trip", "parse and serialise (bs4)"}
    assert synthetic["injected"] and all(a["problem"] is None for a in synthetic["approaches"].values())
    assert not [m for m in raw["mismatches"] if m["approach"] == "inject"]


def test_submission_counts_requests_per_recipient(bench_run):
    raw = raw_of(bench_run, "submission")
    for route in ("form", "mime"):
        one, three = raw[route]["1"], raw[route]["3"]
        # One S3 object per copy; the records of a small message in one transaction.
        assert one["requests_per_message"]["s3.PutObject"] == 1
        assert three["requests_per_message"]["s3.PutObject"] == 3
        assert three["requests_per_message"]["dynamodb.TransactWriteItems"] == 1
        assert set(one["phases_cpu_s"]) == {"plan", "track", "store"}
        assert "cpu_ms_per_additional_recipient" in raw[route]


def test_the_submission_case_reports_what_it_could_not_run_and_never_crashes(tmp_path):
    """On a machine so slow that nothing past one recipient fits the time allowed (BENCH_MAX_RUN_S): the
    sizes not run say so with their projection, and the slope says it was not measured; no crash."""
    path = os.pathsep.join(str(ROOT / p) for p in ("layers/opentracking", "local", "."))
    out = tmp_path / "slow.json"
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--only", "submission", "--out", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": path, "BENCH_MAX_RUN_S": "0.000001"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = {r["metric"]: r for r in json.loads(out.read_text())["rows"]}
    for route in ("form", "mime", "mime, clicks"):
        assert isinstance(rows[f"{route}: 1 recipient(s), CPU per message"]["value"], float)
        skipped = rows[f"{route}: 3 recipients, CPU per message"]
        assert skipped["value"] > 0 and skipped["note"].startswith("not run: projected over")
        slope = rows[f"{route}: CPU per additional recipient"]
        assert slope["value"] is None and slope["note"].startswith("not measured: only 1 size ran")
        assert f"{route}: CPU per additional recipient" in completed.stdout


def test_delivery_measures_the_sender_against_the_transport_call(bench_run):
    raw = raw_of(bench_run, "delivery")
    # the claim, the suppression lists' check and the handoff; the copy rendered from its message's
    # template, read once and cached
    assert raw["requests_per_copy"] == {
        "dynamodb.UpdateItem": 2.0,
        "dynamodb.BatchGetItem": 1.0,
        "sesv2.SendEmail": 1.0,
    }
    assert raw["requests_per_report"] == {"dynamodb.GetItem": 1.0, "dynamodb.TransactWriteItems": 1.0}
    assert raw["cpu_ms_per_copy"] > raw["cpu_ms_transport_floor"] > 0
    costs = raw["cost_per_million"]
    assert costs["ses"] == 100.0 and costs["total"] > costs["ses"]


def test_read_side_records_every_open_against_moto_server(bench_run):
    raw = raw_of(bench_run, "readside")
    assert raw["endpoint"].startswith("http://127.0.0.1:")
    writes = raw["raw open writes"]
    opens = writes["pixel"]["items"]
    assert opens > 0 and writes["opens_lost"] == 0
    # one PutItem per open; an open whose write outlasted the pixel's read timeout on a loaded machine is
    # spilled (kept for the redrive), never retried
    requests = dict(writes["pixel_requests"]["by_operation"])
    assert requests.pop("dynamodb.PutItem") == opens
    assert requests.pop("sqs.SendMessage", 0) == writes["opens_spilled"] and requests == {}
    assert writes["opens_recorded"] + writes["opens_spilled"] >= opens >= writes["opens_recorded"]


def test_read_side_consumes_every_sampled_open_once_and_lists_it_through_the_api(bench_run):
    raw = raw_of(bench_run, "readside")["stream consumer"]
    records = raw["records"]
    # every sampled raw open reached the consumer from moto's stream, and became one opened event
    assert records == raw["events_stored"] > 0 and raw["consumer"]["failures"] == 0
    # the sample mixes people and machines (half of its loads are Apple's proxy or a scanner's HEAD)
    assert raw["counters"]["opened_total"] == records
    assert 0 < raw["counters"]["opened_machine_total"] < records
    assert raw["counters"]["opened_unique"] == raw["copies"]  # the first human open of each copy
    # a replay stores and counts nothing new
    assert raw["replay"]["records"] > 0
    assert (raw["events_after_replay"], raw["counters_after_replay"]) == (records, raw["counters"])
    # the batch's opens in bulk (opentracking.reporting.bulk_opens): its copies and unique markers in one
    # BatchGetItem each, one read of the domain's privacy settings, one query of its webhooks (every type,
    # current and legacy), and transactions of up to 100 items (an event, a marker per copy, each counter
    # once, a check per copy): far fewer than one or two per open, as the one-by-one path made
    by_operation = raw["consumer_requests"]["by_operation"]
    assert set(by_operation) == {
        "dynamodb.BatchGetItem",
        "dynamodb.GetItem",
        "dynamodb.Query",
        "dynamodb.TransactWriteItems",
    }
    assert by_operation["dynamodb.BatchGetItem"] == 2 * raw["batches"]
    assert by_operation["dynamodb.GetItem"] <= raw["batches"]
    assert by_operation["dynamodb.Query"] <= raw["batches"]
    counters = raw["counters"]
    items = records + counters["opened_unique"] + raw["copies"] + 4 * 2  # counters: 2 tags, 4 shards
    assert by_operation["dynamodb.TransactWriteItems"] <= raw["batches"] * (1 + items // 100)
    # the bare replay of those transactions into a twin table in the same state did the same writes
    assert raw["bare_transactions"]["transactions"] == by_operation["dynamodb.TransactWriteItems"]
    assert raw["bare_transactions"]["cancelled"] == 0
    # the events API pages through every stored event, and its baseline read the same index
    api = raw["events_api"]
    assert api["events_listed"] == api["events_expected"] == records == api["bare_query"]["items"]
    assert api["pages"] > 1 and api["requests"]["writes"] == 0


def test_cost_model_prices_what_was_measured(bench_run):
    raw = raw_of(bench_run, "cost")
    floor = raw["opens"]["floor"]
    # The floor: one HTTP API request, 1 ms at 128 MB (arm64), one write unit.
    assert floor["listed_per_million"]["HTTP API"] == 1.0
    assert floor["listed_per_million"]["DynamoDB writes"] == 0.625
    assert all(v["total_listed"] >= floor["total_listed"] for v in raw["opens"].values())
    assert raw["sizes"]["open_item_bytes"] < 1024 and raw["sizes"]["copy_object_bytes"] > 50_000
    assert set(raw["submissions"]) == {"form/1", "form/3", "mime/1", "mime/3"}
    # each function is priced from its own template properties: the pixel opts out of Globals' X-Ray
    # (Tracing: PassThrough) and has its own 256 MB; the submit function keeps Globals' tracing
    functions = raw["functions"]
    assert functions["PixelFunction"] == {
        "memory_mb": 256,
        "architecture": "arm64",
        "timeout_s": 3.0,
        "traced": False,
    }
    assert functions["SubmitFunction"]["traced"] is True and functions["SubmitFunction"]["memory_mb"] == 1024
    template = next(v for label, v in raw["opens"].items() if label.startswith("template"))
    assert template["extras_per_million"]["X-Ray traces"] == 0
    assert raw["storage"]["point_in_time_recovery"] is True
    # the read side is priced from what its case measured: write units per record at on-demand prices
    consumer = raw_of(bench_run, "readside")["stream consumer"]
    read_side = raw["opens"]["read side"]["listed_per_million"]
    assert read_side["DynamoDB writes"] == round(consumer["write_units_per_record"] * 0.625, 4)
    assert consumer["write_units"]["gsi1"] > 0  # opened events are indexed for the events API


def test_counter_simulation_keeps_sharded_keys_under_the_partition_limit(bench_run):
    raw = raw_of(bench_run, "counters")
    assert raw["naive"]["hottest_counter_wcu"] > 1000
    assert raw["sharded"]["keys_over_limit"] == 0
    assert raw["sharded"]["hottest_counter_wcu"] < raw["naive"]["hottest_counter_wcu"]


def test_injection_check_catches_a_missing_and_a_doubled_pixel():
    from bench.injection import MARKUP, synthetic_html, wrap
    from bench.injection import check as check_pixels

    html = synthetic_html(2000)
    original = wrap(html.encode())
    assert check_pixels(original, original) == "0 pixels"
    head, end, tail = html.rpartition("</body>")
    assert check_pixels(original, wrap((head + MARKUP + end + tail).encode())) is None
    assert check_pixels(original, wrap((head + MARKUP + MARKUP + end + tail).encode())) == "2 pixels"


def test_item_size_follows_dynamodb_rules():
    from bench.cost import item_bytes, lambda_billed_ms, write_units

    assert item_bytes({"pk": {"S": "abc"}}) == 5
    assert item_bytes({"n": {"N": "12345"}, "b": {"BOOL": True}}) == 1 + 4 + 1 + 1
    assert write_units(1024) == 1 and write_units(1025) == 2 and write_units(100, transactional=True) == 2
    # CPU stretches below 1,769 MB (Lambda's one-vCPU point); billing rounds up to the millisecond.
    assert lambda_billed_ms(1.0, 1769, 0.0) == 1 and lambda_billed_ms(1.0, 256, 5.0) == 12
