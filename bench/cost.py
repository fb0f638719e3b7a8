"""Case 6: the cost model. US dollars per million opens and per million submitted recipients at AWS list
prices (us-east-1), from the requests and CPU measured by the pixel and submission cases, item and object
sizes measured here, and each function's own resolved properties in template.yaml (its MemorySize,
Architectures, Timeout and Tracing, else Globals.Function's), the retention parameters' defaults and the
table's billing mode and point-in-time recovery.

Lambda duration is modelled, not measured (there is no AWS here): the CPU time measured on this machine,
scaled by Lambda's CPU share (a full vCPU at 1,769 MB, proportionally less below), plus an assumed
in-region latency for each AWS request, rounded up to the 1 ms Lambda bills. The assumptions are in
ASSUMED_LATENCY_MS and the JSON output.

The open floor: one HTTP API request, a minimal Lambda invocation (1 ms billed at 128 MB) and one write.
Target: within 1.15x of the floor per million opens.
"""

from __future__ import annotations

import math

from bench import stubs
from bench.env import (
    architecture,
    captured_output,
    environment,
    function_env,
    memory_size,
    stub_stack,
    timeout_s,
    traced,
)
from bench.report import at_most, row

PRICES = {
    "http_api_per_request": 1.00 / 1e6,
    "lambda_per_request": 0.20 / 1e6,
    "lambda_gb_second": {"x86_64": 0.0000166667, "arm64": 0.0000133334},
    "dynamodb_wru": 0.625 / 1e6,
    "dynamodb_rru": 0.125 / 1e6,
    "s3_put": 0.005 / 1000,
    "s3_gb_month": 0.023,
    # Not in the list, but on the bill (us-east-1 list prices): reported on their own rows.
    "cloudwatch_logs_gb": 0.50,
    "xray_trace": 5.00 / 1e6,
    "dynamodb_gb_month": 0.25,
    "dynamodb_pitr_gb_month": 0.20,
}
FULL_VCPU_MB = 1769
# In-region p50 latency assumed per request, ms (not measurable here).
ASSUMED_LATENCY_MS = {
    "dynamodb.PutItem": 5.0,
    "dynamodb.GetItem": 4.0,
    "dynamodb.TransactWriteItems": 15.0,
    "s3.PutObject": 25.0,
    "secretsmanager.GetSecretValue": 10.0,
}
S3_WORKERS = 16  # opentracking.storage.store uploads copies 16 at a time
XRAY_SAMPLED = 0.05  # Lambda's default rule: 1 request a second, then 5% (at scale, ~5%)
PLATFORM_LOG_BYTES = 300  # START, END and REPORT lines Lambda writes for every invocation
DAYS_PER_MONTH = 30.0
OPEN_TARGET = 1.15


# --------------------------------------------------------------------------------------
# Sizes and units
# --------------------------------------------------------------------------------------


def _value_bytes(value: dict) -> int:
    (kind, data), *_ = value.items()
    if kind == "S":
        return len(data.encode("utf-8"))
    if kind == "N":
        digits = data.strip("-").replace(".", "").lstrip("0") or "0"
        return math.ceil(len(digits) / 2) + 1
    if kind == "B":
        return len(data)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind in ("SS", "NS", "BS"):
        return sum(_value_bytes({kind[0]: element}) for element in data)
    if kind == "L":
        return 3 + sum(1 + _value_bytes(element) for element in data)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + _value_bytes(v) for k, v in data.items())
    raise ValueError(f"unknown DynamoDB type {kind}")


def item_bytes(item: dict) -> int:
    """An item's size as DynamoDB counts it: attribute names plus values."""
    return sum(len(name.encode("utf-8")) + _value_bytes(value) for name, value in item.items())


def write_units(size: int, *, transactional: bool = False) -> int:
    return math.ceil(size / 1024) * (2 if transactional else 1)


def lambda_billed_ms(cpu_ms: float, memory_mb: int, io_ms: float) -> int:
    return max(1, math.ceil(cpu_ms * max(1.0, FULL_VCPU_MB / memory_mb) + io_ms))


def lambda_compute(memory_mb: int, arch: str, billed_ms: float) -> float:
    return memory_mb / 1024 * billed_ms / 1000 * PRICES["lambda_gb_second"][arch]


def _per_million(parts: dict[str, float]) -> dict[str, float]:
    return {name: round(value * 1e6, 4) for name, value in parts.items()}


# --------------------------------------------------------------------------------------
# What is written, measured
# --------------------------------------------------------------------------------------


def measured_sizes() -> dict:
    """The raw open item, and the records and copies of one 50 KB submission, as sent to AWS."""
    from bench.pixel import COPY_ID
    from bench.submission import make_form, submit
    from opentracking.tracking import pixel, tokens

    open_item = pixel.open_item(
        tokens.OpenClaims(copy_id=COPY_ID.hex(), domain=stubs.BENCH_DOMAIN, key_id=1),
        request_id="JKJaXmPLvHcESPG=",
        source_ip="198.51.100.7",
        user_agent="Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
        method="GET",
        expires_at=1766750460,
        now=1764158460.123,
    )
    stack = stub_stack()
    env = function_env(stack, "SubmitFunction")
    recipients = 3
    record = frozenset({"TransactWriteItems", "PutObject"})
    with environment(env), stubs.AwsStub.from_env(env, record=record) as stub, captured_output():
        submit(make_form(recipients, mime=True), mime=True)
    items = [
        entry["Put"]["Item"]
        for _service, op, params in stub.recorded
        if op == "TransactWriteItems"
        for entry in params["TransactItems"]
    ]
    objects = [len(params["Body"]) for _service, op, params in stub.recorded if op == "PutObject"]
    by_type: dict[str, list[int]] = {}
    for item in items:
        by_type.setdefault(item["type"]["S"], []).append(item_bytes(item))
    return {
        "open_item_bytes": item_bytes(open_item),
        "record_bytes": {kind: max(sizes) for kind, sizes in by_type.items()},
        "records_per_recipient": {
            kind: len(sizes) / recipients for kind, sizes in by_type.items() if kind != "message"
        },
        "records_with_gsi": sorted({item["type"]["S"] for item in items if "gsi1pk" in item}),
        "copy_object_bytes": max(objects),
    }


# --------------------------------------------------------------------------------------
# Opens
# --------------------------------------------------------------------------------------


def open_costs(
    pixel_raw: dict,
    sizes: dict,
    *,
    memory_mb: int,
    arch: str,
    tracing: bool,
    metric_logs: bool,
    storage: dict,
) -> dict:
    """Dollars per open, by line item; `extras` are the lines outside the issue's price list."""
    requests = pixel_raw["requests_warm"]["by_operation"]
    opens = pixel_raw["warm_opens"]
    io_ms = sum(ASSUMED_LATENCY_MS.get(op, 5.0) * n / opens for op, n in requests.items())
    cpu_ms = pixel_raw["cpu"]["pixel"]["mean_us"] / 1000
    billed = lambda_billed_ms(cpu_ms, memory_mb, io_ms)
    open_bytes = sizes["open_item_bytes"]
    writes = pixel_raw["requests_per_open"]["writes"]
    reads = pixel_raw["requests_per_open"]["reads"]
    listed = {
        "HTTP API": PRICES["http_api_per_request"],
        "Lambda requests": PRICES["lambda_per_request"],
        "Lambda compute": lambda_compute(memory_mb, arch, billed),
        "DynamoDB writes": writes * write_units(open_bytes) * PRICES["dynamodb_wru"],
        "DynamoDB reads": reads * PRICES["dynamodb_rru"],
    }
    log_bytes = PLATFORM_LOG_BYTES + (pixel_raw["log_bytes_per_open"] if metric_logs else 0)
    extras = {
        "CloudWatch Logs": log_bytes / 1e9 * PRICES["cloudwatch_logs_gb"],
        "X-Ray traces": (XRAY_SAMPLED * PRICES["xray_trace"]) if tracing else 0.0,
        "DynamoDB storage + PITR": open_bytes / 1e9 * storage["event_months"] * storage["table_gb_month"],
    }
    return {"listed": listed, "extras": extras, "billed_ms": billed, "cpu_ms_here": cpu_ms, "io_ms": io_ms}


def open_floor(sizes: dict, storage: dict) -> dict:
    listed = {
        "HTTP API": PRICES["http_api_per_request"],
        "Lambda requests": PRICES["lambda_per_request"],
        "Lambda compute": lambda_compute(128, "arm64", 1),
        "DynamoDB writes": PRICES["dynamodb_wru"],
    }
    extras = {
        "CloudWatch Logs": PLATFORM_LOG_BYTES / 1e9 * PRICES["cloudwatch_logs_gb"],
        "DynamoDB storage + PITR": sizes["open_item_bytes"]
        / 1e9
        * storage["event_months"]
        * storage["table_gb_month"],
    }
    return {"listed": listed, "extras": extras}


# --------------------------------------------------------------------------------------
# Submissions
# --------------------------------------------------------------------------------------


def submission_costs(
    figures: dict, n: int, sizes: dict, *, memory_mb: int, arch: str, timeout_s: float, storage: dict
) -> dict:
    """Dollars per recipient for a message to n recipients, by line item."""
    per_message = figures["requests_per_message"]
    puts = per_message.get("s3.PutObject", 0)
    transactions = per_message.get("dynamodb.TransactWriteItems", 0)
    io_ms = (
        math.ceil(puts / S3_WORKERS) * ASSUMED_LATENCY_MS["s3.PutObject"]
        + transactions * ASSUMED_LATENCY_MS["dynamodb.TransactWriteItems"]
        + sum(
            ASSUMED_LATENCY_MS.get(op, 5.0) * count
            for op, count in per_message.items()
            if op not in ("s3.PutObject", "dynamodb.TransactWriteItems")
        )
    )
    billed = lambda_billed_ms(figures["cpu_s"] * 1000, memory_mb, io_ms)
    record_wru = sum(
        per * write_units(sizes["record_bytes"][kind], transactional=True)
        + (per * write_units(sizes["record_bytes"][kind]) if kind in sizes["records_with_gsi"] else 0)
        for kind, per in sizes["records_per_recipient"].items()
    )
    message_wru = write_units(sizes["record_bytes"].get("message", 1024), transactional=True) + write_units(
        sizes["record_bytes"].get("message", 1024)
    )
    copy_gb = sizes["copy_object_bytes"] / 1e9
    listed = {
        "HTTP API": PRICES["http_api_per_request"] / n,
        "Lambda requests": PRICES["lambda_per_request"] / n,
        "Lambda compute": lambda_compute(memory_mb, arch, billed) / n,
        "S3 PUT": puts / n * PRICES["s3_put"],
        "S3 storage": copy_gb * storage["message_months"] * PRICES["s3_gb_month"],
        "DynamoDB writes": (record_wru + message_wru / n) * PRICES["dynamodb_wru"],
        "DynamoDB reads": per_message.get("dynamodb.GetItem", 0) / n * PRICES["dynamodb_rru"],
    }
    return {"listed": listed, "billed_ms": billed, "over_timeout": billed > timeout_s * 1000, "io_ms": io_ms}


def submission_floor(sizes: dict, n: int, storage: dict) -> dict[str, float]:
    """Per recipient: one S3 PUT and the copy's storage, one 1 KB write; per message one request and 1 ms."""
    return {
        "HTTP API": PRICES["http_api_per_request"] / n,
        "Lambda requests": PRICES["lambda_per_request"] / n,
        "Lambda compute": lambda_compute(128, "arm64", 1) / n,
        "S3 PUT": PRICES["s3_put"],
        "S3 storage": sizes["copy_object_bytes"] / 1e9 * storage["message_months"] * PRICES["s3_gb_month"],
        "DynamoDB writes": PRICES["dynamodb_wru"],
    }


# --------------------------------------------------------------------------------------
# The case
# --------------------------------------------------------------------------------------


def resolved_function(stack, logical_id: str) -> dict:
    """What a function is billed by, from its own properties in the template, else Globals.Function's."""
    return {
        "memory_mb": memory_size(stack, logical_id),
        "architecture": architecture(stack, logical_id),
        "timeout_s": timeout_s(stack, logical_id),
        "traced": traced(stack, logical_id),
    }


def table_storage(stack) -> dict:
    """Retention and storage prices from the template: the retention parameters' defaults, the table's
    point-in-time recovery. The price list is on-demand's, so the table must be on demand."""
    table = stack.resources["DataTable"]["Properties"]
    if table.get("BillingMode") != "PAY_PER_REQUEST":
        raise ValueError("the cost model prices on-demand capacity; DataTable is not PAY_PER_REQUEST")
    pitr = bool(table.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled"))
    parameters = stack.template.get("Parameters", {})
    return {
        "message_months": float(parameters["MessageRetentionDays"]["Default"]) / DAYS_PER_MONTH,
        "event_months": float(parameters["EventRetentionDays"]["Default"]) / DAYS_PER_MONTH,
        "point_in_time_recovery": pitr,
        "table_gb_month": PRICES["dynamodb_gb_month"] + (PRICES["dynamodb_pitr_gb_month"] if pitr else 0.0),
    }


def _fmt(parts: dict[str, float]) -> str:
    return ", ".join(f"{name} ${value:.4f}" for name, value in parts.items() if value)


def read_side_costs(readside_raw: dict, *, memory_mb: int, arch: str, batch_size: int) -> dict:
    """Dollars per open for the events function, from what the read-side case measured: its requests and
    write units per record, and its own CPU per record (this machine), in batches of the template's size."""
    per_record = readside_raw["requests_per_record"]
    io_ms = sum(ASSUMED_LATENCY_MS.get(op, 5.0) * n for op, n in per_record.items())  # one after another
    cpu_ms = readside_raw["consumer"]["cpu_ms_per_record"]
    billed_per_batch = lambda_billed_ms(cpu_ms * batch_size, memory_mb, io_ms * batch_size)
    listed = {
        "Lambda requests": PRICES["lambda_per_request"] / batch_size,
        "Lambda compute": lambda_compute(memory_mb, arch, billed_per_batch) / batch_size,
        "DynamoDB writes": readside_raw["write_units_per_record"] * PRICES["dynamodb_wru"],
        # strongly consistent GetItem of a copy record (< 4 KB): 1 read unit
        "DynamoDB reads": per_record.get("dynamodb.GetItem", 0) * PRICES["dynamodb_rru"],
    }
    return {"listed": listed, "billed_ms_per_batch": billed_per_batch, "io_ms_per_record": io_ms}


def run(
    *, pixel_raw: dict, submission_raw: dict, readside_raw: dict | None = None, tiny: bool = False
) -> dict:
    stack = stub_stack()
    sizes = measured_sizes()
    functions = {name: resolved_function(stack, name) for name in ("PixelFunction", "SubmitFunction")}
    pixel, submit = functions["PixelFunction"], functions["SubmitFunction"]
    storage = table_storage(stack)
    rows = []
    raw: dict = {
        "prices": PRICES,
        "assumed_latency_ms": ASSUMED_LATENCY_MS,
        "full_vcpu_mb": FULL_VCPU_MB,
        "functions": functions,
        "storage": storage,
        "sizes": sizes,
        "opens": {},
        "submissions": {},
    }

    floor = open_floor(sizes, storage)
    floor_listed = sum(floor["listed"].values()) * 1e6
    floor_all = floor_listed + sum(floor["extras"].values()) * 1e6
    tracing = "X-Ray on" if pixel["traced"] else "no X-Ray"
    variants = {
        f"template ({pixel['memory_mb']} MB, {tracing}, EMF metric per open)": (pixel["memory_mb"], True),
        "proposed: 128 MB": (128, True),
        "proposed: 128 MB, no per-open metric": (128, False),
    }
    for label, (memory, metric_logs) in variants.items():
        costs = open_costs(
            pixel_raw,
            sizes,
            memory_mb=memory,
            arch=pixel["architecture"],
            tracing=pixel["traced"],
            metric_logs=metric_logs,
            storage=storage,
        )
        listed = sum(costs["listed"].values()) * 1e6
        everything = listed + sum(costs["extras"].values()) * 1e6
        is_template = label.startswith("template")
        ratio = listed / floor_listed
        rows.append(
            row(
                "cost",
                f"$ per million opens, issue's price list: {label}",
                listed,
                "USD",
                baseline=floor_listed,
                target=f"<= {OPEN_TARGET}x floor" if is_template else None,
                met=at_most(ratio, OPEN_TARGET) if is_template else None,
                note=f"{costs['billed_ms']} ms billed; " + _fmt(_per_million(costs["listed"])),
            )
        )
        rows.append(
            row(
                "cost",
                f"$ per million opens, with logs, X-Ray, storage: {label}",
                everything,
                "USD",
                baseline=floor_all,
                note=_fmt(_per_million(costs["extras"])),
            )
        )
        raw["opens"][label] = {
            "listed_per_million": _per_million(costs["listed"]),
            "extras_per_million": _per_million(costs["extras"]),
            "total_listed": listed,
            "total_with_extras": everything,
            "billed_ms": costs["billed_ms"],
            "cpu_ms_measured_here": costs["cpu_ms_here"],
            "assumed_io_ms": costs["io_ms"],
        }
    consumer = (readside_raw or {}).get("stream consumer")
    if consumer:
        events_function = resolved_function(stack, "EventsFunction")
        functions["EventsFunction"] = events_function
        costs = read_side_costs(
            consumer,
            memory_mb=events_function["memory_mb"],
            arch=events_function["architecture"],
            batch_size=consumer["batch_size"],
        )
        downstream = sum(costs["listed"].values()) * 1e6
        template_listed = next(v for k, v in raw["opens"].items() if k.startswith("template"))["total_listed"]
        rows.append(
            row(
                "cost",
                "$ per million opens, read side (events function), issue's price list",
                downstream,
                "USD",
                note=f"{consumer['write_units_per_record']:.1f} WRU per open; "
                + _fmt(_per_million(costs["listed"])),
            )
        )
        rows.append(
            row(
                "cost",
                "$ per million opens, pixel + read side, issue's price list",
                template_listed + downstream,
                "USD",
                baseline=floor_listed,
                note="the floor is the pixel's: one request, one invocation, one write",
            )
        )
        raw["opens"]["read side"] = {
            "listed_per_million": _per_million(costs["listed"]),
            "total_listed": downstream,
            "billed_ms_per_batch": costs["billed_ms_per_batch"],
            "assumed_io_ms_per_record": costs["io_ms_per_record"],
        }
    raw["opens"]["floor"] = {
        "listed_per_million": _per_million(floor["listed"]),
        "extras_per_million": _per_million(floor["extras"]),
        "total_listed": floor_listed,
        "total_with_extras": floor_all,
    }

    for route in ("form", "mime"):
        per_count = submission_raw.get(route, {})
        for n, figures in per_count.items():
            if not isinstance(figures, dict) or figures.get("skipped"):
                continue
            n = int(n)
            costs = submission_costs(
                figures,
                n,
                sizes,
                memory_mb=submit["memory_mb"],
                arch=submit["architecture"],
                timeout_s=submit["timeout_s"],
                storage=storage,
            )
            total = sum(costs["listed"].values()) * 1e6
            floor_total = sum(submission_floor(sizes, n, storage).values()) * 1e6
            timeout_note = (
                f"; {costs['billed_ms'] / 1000:,.1f} s modelled, over the {submit['timeout_s']:.0f} s Timeout"
                if costs["over_timeout"]
                else f"; {costs['billed_ms']:,} ms billed"
            )
            rows.append(
                row(
                    "cost",
                    f"$ per million recipients, {route}, {n:,} per message",
                    total,
                    "USD",
                    baseline=floor_total,
                    note=_fmt(_per_million(costs["listed"])) + timeout_note,
                )
            )
            raw["submissions"][f"{route}/{n}"] = {
                "listed_per_million": _per_million(costs["listed"]),
                "total": total,
                "floor_total": floor_total,
                "billed_ms_per_message": costs["billed_ms"],
                "over_timeout": costs["over_timeout"],
                "assumed_io_ms": costs["io_ms"],
            }
    return {"rows": rows, "raw": raw}
