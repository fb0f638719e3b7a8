"""The benchmarks run on tiny inputs and produce well-formed results. No timing is asserted here: only
shapes, and counts (the pixel's one AWS request per open). AWS is answered in-process at the botocore
layer; the read-side case starts moto server on 127.0.0.1, the cold-start case runs child processes."""

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

from bench import stubs  # noqa: E402

ROW_KEYS = {"case", "metric", "value", "unit", "baseline", "ratio", "target", "met", "note"}


@pytest.fixture(autouse=True, scope="module")
def _botocore_restored():
    yield
    stubs.uninstall()


def assert_rows(result: dict, case: str) -> None:
    assert result["rows"], f"{case}: no rows"
    for r in result["rows"]:
        assert set(r) == ROW_KEYS
        assert r["case"] == case
        assert isinstance(r["value"], int | float)
        assert r["met"] in (True, False, None)
        if r["target"] is None:
            assert r["met"] is None
    json.dumps(result, default=str)  # the raw figures are JSON


@pytest.fixture(scope="module")
def pixel_result():
    from bench import pixel

    return pixel.run(tiny=True)


@pytest.fixture(scope="module")
def submission_result():
    from bench import submission

    return submission.run(tiny=True)


def test_pixel_makes_exactly_one_aws_request_per_open(pixel_result):
    # GIVEN a warm pixel with AWS answered at the botocore layer
    raw = pixel_result["raw"]
    # THEN every open made one request, a PutItem, and read nothing
    assert raw["requests_per_open"] == {"api_calls": 1.0, "http_requests": 1.0, "reads": 0.0, "writes": 1.0}
    assert raw["requests_warm"]["by_operation"] == {"dynamodb.PutItem": raw["warm_opens"]}
    # AND the first open in a fresh environment also fetched the signing keys, once
    assert raw["requests_first_open"]["by_operation"] == {
        "dynamodb.PutItem": 1,
        "secretsmanager.GetSecretValue": 1,
    }
    assert_rows(pixel_result, "pixel")
    for name in ("pixel", "floor"):
        assert raw["cpu"][name]["n"] >= 50 and raw["cpu"][name]["p50_us"] > 0


def test_cold_start_measures_the_pixel_and_the_floor_in_fresh_processes():
    from bench import coldstart

    result = coldstart.run(tiny=True)
    assert_rows(result, "cold start")
    raw = result["raw"]
    assert raw["floor"]["total_ms"] > 0
    (run,) = raw["PixelFunction"]["runs"]
    assert run["status"] == 200
    assert run["requests"]["by_operation"] == {"dynamodb.PutItem": 1, "secretsmanager.GetSecretValue": 1}


def test_injection_compares_three_injectors_and_checks_them():
    pytest.importorskip("bs4")
    from bench import injection

    result = injection.run(tiny=True)
    assert_rows(result, "injection")
    raw = result["raw"]
    names = {entry["name"] for entry in raw["inputs"]}
    assert "synthetic 5 KB" in names
    assert not [m for m in raw["mismatches"] if m["approach"] == "inject"]
    synthetic = next(e for e in raw["inputs"] if e["name"] == "synthetic 5 KB")
    assert synthetic["injected"] and all(a["problem"] is None for a in synthetic["approaches"].values())


def test_injection_check_catches_a_missing_and_a_doubled_pixel():
    from bench.injection import MARKUP, synthetic_html, wrap
    from bench.injection import check as check_pixels

    html = synthetic_html(2000)
    original = wrap(html.encode())
    assert check_pixels(original, original) == "0 pixels"
    head, end, tail = html.rpartition("</body>")
    doubled = wrap((head + MARKUP + MARKUP + end + tail).encode())
    assert check_pixels(original, doubled) == "2 pixels"


def test_submission_counts_requests_per_recipient(submission_result):
    assert_rows(submission_result, "submission")
    for route in ("form", "mime"):
        figures = submission_result["raw"][route]
        one, three = figures[1], figures[3]
        # One S3 object per copy; the records of a small message in one transaction.
        assert one["requests_per_message"]["s3.PutObject"] == 1
        assert three["requests_per_message"]["s3.PutObject"] == 3
        assert three["requests_per_message"]["dynamodb.TransactWriteItems"] == 1
        assert set(one["phases_cpu_s"]) == {"plan", "track", "store"}
        assert "cpu_ms_per_additional_recipient" in figures


def test_read_side_records_every_open_against_moto_server():
    from bench import readside

    result = readside.run(tiny=True)
    assert_rows(result, "read side")
    raw = result["raw"]
    assert raw["endpoint"].startswith("http://127.0.0.1:")
    writes = raw["raw open writes"]
    assert writes["opens_lost"] == 0 and writes["opens_recorded"] == writes["pixel"]["items"] > 0
    assert writes["pixel_requests"]["by_operation"] == {"dynamodb.PutItem": writes["pixel"]["items"]}


def test_cost_model_prices_what_was_measured(pixel_result, submission_result):
    from bench import cost

    result = cost.run(pixel_raw=pixel_result["raw"], submission_raw=submission_result["raw"], tiny=True)
    assert_rows(result, "cost")
    raw = result["raw"]
    floor = raw["opens"]["floor"]
    # The floor is the issue's: one HTTP API request, 1 ms at 128 MB (arm64), one write unit.
    assert floor["listed_per_million"]["HTTP API"] == 1.0
    assert floor["listed_per_million"]["DynamoDB writes"] == 0.625
    assert all(v["total_listed"] >= floor["total_listed"] for v in raw["opens"].values())
    assert raw["sizes"]["open_item_bytes"] < 1024 and raw["sizes"]["copy_object_bytes"] > 50_000
    assert set(raw["submissions"]) == {"form/1", "form/3", "mime/1", "mime/3"}


def test_item_size_follows_dynamodb_rules():
    from bench.cost import item_bytes, write_units

    assert item_bytes({"pk": {"S": "abc"}}) == 5
    assert item_bytes({"n": {"N": "12345"}, "b": {"BOOL": True}}) == 1 + 4 + 1 + 1
    assert write_units(1024) == 1 and write_units(1025) == 2 and write_units(100, transactional=True) == 2


def test_counter_simulation_keeps_sharded_keys_under_the_partition_limit():
    from bench import counters

    result = counters.run(tiny=True)
    assert_rows(result, "counters @100k/s")
    raw = result["raw"]
    assert raw["naive"]["hottest_counter_wcu"] > counters.PARTITION_WCU
    assert raw["sharded"]["keys_over_limit"] == 0
    assert raw["sharded"]["hottest_counter_wcu"] < raw["naive"]["hottest_counter_wcu"]


def test_make_bench_entry_point_writes_json_and_markdown(tmp_path):
    out = tmp_path / "latest.json"
    completed = subprocess.run(  # noqa: S603  (our own interpreter and module)
        [sys.executable, "-m", "bench", "--tiny", "--only", "counters", "--out", str(out)],
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": f"{ROOT / 'layers/opentracking'}:{ROOT / 'local'}:{ROOT}",
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    document = json.loads(out.read_text())
    assert set(document) == {"machine", "tiny", "seconds", "rows", "cases"}
    assert document["rows"] and "counters" in document["cases"]
    assert out.with_suffix(".md").read_text().startswith("| case |")
    assert "counters @100k/s" in completed.stdout
