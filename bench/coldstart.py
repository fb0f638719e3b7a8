"""Case 2: cold starts. Import plus first invocation of each function in a fresh process (several
repetitions, order shuffled), against the floor `import boto3; boto3.client("dynamodb")` measured the same
way. Target: the pixel at most 1.3x the floor."""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlencode

from bench import stubs
from bench.env import ROOT, function_env, stub_stack
from bench.pixel import COPY_ID, pixel_event
from bench.report import at_most, row
from bench.timing import median
from devstack.events import make_http_event
from devstack.handlers import load_event

FLOOR = "floor"
# (logical id, code uri) of every function, the pixel first.
FUNCTIONS = [
    ("PixelFunction", "functions/pixel"),
    ("SubmitFunction", "functions/submit"),
    ("ApiFunction", "functions/api"),
    ("DnsHealthFunction", "functions/dns_health"),
]
PIXEL_TARGET = 1.3
# The pixel as a package without bytecode starts: every module of the layer compiled at import (what a
# `sam build` without `make build`'s compile step ships; /opt is read-only, so nothing is cached either).
NO_BYTECODE = "PixelFunction, no bytecode"


def _basic_auth() -> str:
    return "Basic " + base64.b64encode(f"api:{stubs.ACCOUNT_KEY}".encode()).decode()


def first_events() -> dict[str, dict]:
    """The request each function answers first: an open, a one-recipient message, a domain, a check."""
    from opentracking.tracking import tokens

    keyring = tokens.KeyRing.from_secret(json.loads(stubs.TOKEN_SECRET))
    domain = stubs.BENCH_DOMAIN
    form = urlencode(
        {
            "from": f"Sender <sender@{domain}>",
            "to": "reader@example.net",
            "subject": "Hello",
            "text": "Hello",
            "html": "<html><body><p>Hello</p></body></html>",
        }
    ).encode()
    return {
        "PixelFunction": pixel_event(tokens.issue_token(keyring, COPY_ID, domain)),
        "SubmitFunction": make_http_event(
            "POST",
            f"/v3/{domain}/messages",
            route_key="POST /v3/{domain}/messages",
            path_parameters={"domain": domain},
            headers={"authorization": _basic_auth(), "content-type": "application/x-www-form-urlencoded"},
            body=form,
        ),
        "ApiFunction": make_http_event(
            "GET",
            f"/v3/domains/{domain}",
            route_key="GET /v3/domains/{name}",
            path_parameters={"name": domain},
            headers={"authorization": _basic_auth()},
        ),
        "DnsHealthFunction": load_event("dns_health_schedule.json"),
    }


def _child(
    variant: str,
    env: dict[str, str],
    event_file: str,
    workdir: Path,
    *,
    importtime: bool = False,
    profile_path: Path | None = None,
) -> dict:
    out = workdir / "result.json"
    out.unlink(missing_ok=True)
    flags = ["-X", "importtime"] if importtime else []
    extra = [str(profile_path)] if profile_path else []
    completed = subprocess.run(  # noqa: S603  (our own interpreter and module)
        [sys.executable, *flags, "-m", "bench.coldstart_child", variant, event_file, str(out), *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=300,
        check=False,
    )
    if completed.returncode != 0 or not out.exists():
        raise RuntimeError(
            f"cold start of {variant} failed:\n{completed.stderr.decode(errors='replace')[-2000:]}"
        )
    result = json.loads(out.read_text())
    if importtime:
        result["importtime"] = completed.stderr.decode(errors="replace")
    return result


def plans(functions: list[tuple[str, str]], workdir: Path) -> dict[str, tuple[str, dict[str, str], str]]:
    """name -> (variant, environment, event file) for each child process."""
    stack = stub_stack()
    events = first_events()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_"))}
    base["PYTHONPATH"] = os.pathsep.join(str(ROOT / p) for p in ("layers/opentracking", "local", "."))
    base.pop("PYTHONDONTWRITEBYTECODE", None)
    found = {FLOOR: (FLOOR, {**base, **function_env(stack, "PixelFunction")}, "-")}
    for logical_id, code_uri in functions:
        event_file = workdir / f"{logical_id}.json"
        event_file.write_text(json.dumps(events[logical_id]))
        found[logical_id] = (code_uri, {**base, **function_env(stack, logical_id)}, str(event_file))
    return found


def import_profile(
    logical_id: str = "PixelFunction", *, top: int = 15, first_call: Path | None = None
) -> dict[str, list[tuple[str, float]]]:
    """`python -X importtime` of the floor and one function: self time (ms) by top-level package. With
    `first_call`, also a cProfile of the function's first invocation, dumped there."""
    code_uri = dict(FUNCTIONS)[logical_id]
    profiles = {}
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as tmp:
        workdir = Path(tmp)
        for name, (variant, env, event_file) in plans([(logical_id, code_uri)], workdir).items():
            if first_call is not None and name == logical_id:
                _child(variant, env, event_file, workdir, profile_path=first_call)
            _child(variant, env, event_file, workdir)  # byte-code caches
            text = _child(variant, env, event_file, workdir, importtime=True)["importtime"]
            by_package: dict[str, float] = {}
            for line in text.splitlines():
                if not line.startswith("import time:") or "|" not in line or "self" in line:
                    continue
                self_us, _cumulative, module = (
                    part.strip() for part in line[len("import time:") :].split("|")
                )
                package = module.split(".")[0]
                by_package[package] = by_package.get(package, 0.0) + int(self_us) / 1000
            ranked = sorted(by_package.items(), key=lambda kv: -kv[1])
            profiles[name] = [(package, round(ms, 1)) for package, ms in ranked[:top]]
            profiles[name].append(("(all imports)", round(sum(by_package.values()), 1)))
    return profiles


def run(*, tiny: bool = False, repetitions: int | None = None) -> dict:
    reps = repetitions or (1 if tiny else 7)
    functions = FUNCTIONS[:1] if tiny else FUNCTIONS
    samples: dict[str, list[dict]] = {FLOOR: [], **{lid: [] for lid, _ in functions}}
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as tmp:
        workdir = Path(tmp)
        plans_by_name = plans(functions, workdir)
        variant, env, event_file = plans_by_name["PixelFunction"]
        # No bytecode to read (an empty cache directory) and none written: compiled at every start.
        no_cache = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": str(workdir / "no-bytecode")}
        plans_by_name[NO_BYTECODE] = (variant, {**env, **no_cache}, event_file)
        samples[NO_BYTECODE] = []
        # One unrecorded run each: byte-code caches and the page cache, as a deployed package has them.
        for variant, env, event_file in plans_by_name.values():
            _child(variant, env, event_file, workdir)
        order = list(plans_by_name)
        for _ in range(reps):
            random.shuffle(order)
            for name in order:
                variant, env, event_file = plans_by_name[name]
                samples[name].append(_child(variant, env, event_file, workdir))

    floor_ms = median([s["total_ms"] for s in samples[FLOOR]])
    floor_cpu = median([s["cpu_ms"] for s in samples[FLOOR]])
    rows = [row("cold start", "floor: import boto3 + dynamodb client", floor_ms, "ms", note=f"{reps} runs")]
    summary = {FLOOR: {"total_ms": floor_ms, "cpu_ms": floor_cpu, "runs": samples[FLOOR]}}
    for logical_id, _ in functions:
        runs = samples[logical_id]
        total = median([s["total_ms"] for s in runs])
        import_ms = median([s["import_ms"] for s in runs])
        invoke_ms = median([s["invoke_ms"] for s in runs])
        ratio = total / floor_ms
        is_pixel = logical_id == "PixelFunction"
        requests = runs[-1]["requests"]
        rows.append(
            row(
                "cold start",
                f"{logical_id}: import + first invocation",
                total,
                "ms",
                baseline=floor_ms,
                ratio=ratio,
                target=f"<= {PIXEL_TARGET}x floor" if is_pixel else None,
                met=at_most(ratio, PIXEL_TARGET) if is_pixel else None,
                note=(
                    f"import {import_ms:.0f} ms, first invocation {invoke_ms:.0f} ms, "
                    f"status {runs[-1]['status']}, {requests['api_calls']} AWS requests"
                ),
            )
        )
        summary[logical_id] = {
            "total_ms": total,
            "import_ms": import_ms,
            "invoke_ms": invoke_ms,
            "cpu_ms": median([s["cpu_ms"] for s in runs]),
            "ratio": ratio,
            "runs": runs,
        }
    without = median([s["total_ms"] for s in samples[NO_BYTECODE]])
    with_bytecode = summary["PixelFunction"]["total_ms"]
    rows.append(
        row(
            "cold start",
            f"{NO_BYTECODE}: import + first invocation",
            without,
            "ms",
            baseline=with_bytecode,
            ratio=without / with_bytecode,
            note="baseline: the pixel with bytecode (what `make build` ships); "
            f"{without / floor_ms:.2f}x the floor",
        )
    )
    summary[NO_BYTECODE] = {"total_ms": without, "runs": samples[NO_BYTECODE]}
    return {"rows": rows, "raw": {"repetitions": reps, "hidden_packages": stubs.NOT_IN_LAMBDA, **summary}}
