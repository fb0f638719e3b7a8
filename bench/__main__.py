"""`make bench`: run every case, print the table of ratios, write the raw figures as JSON.

python -m bench [--tiny] [--only pixel,coldstart,...] [--out bench/results/latest.json] [--profile]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench import stubs

CASES = (
    "pixel",
    "coldstart",
    "injection",
    "submission",
    "delivery",
    "readside",
    "cost",
    "counters",
    "hostile",
    "localstack",
)


def main(argv: list[str] | None = None) -> int:
    # Before anything imports botocore: measure with the module set the Lambda runtime and layer have.
    stubs.hide_non_lambda_packages()

    from bench import report
    from bench.env import RESULTS_DIR

    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny inputs and budgets (a smoke run)")
    parser.add_argument("--only", default="", help=f"comma-separated cases of: {', '.join(CASES)}")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "latest.json", help="where the JSON goes")
    parser.add_argument("--profile", action="store_true", help="also write cProfile reports to bench/results")
    args = parser.parse_args(argv)

    selected = [c for c in args.only.split(",") if c] or list(CASES)
    unknown = set(selected) - set(CASES)
    if unknown:
        parser.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    if "cost" in selected:  # the cost model prices what the pixel and submission cases measured
        selected = [c for c in CASES if c in {*selected, "pixel", "submission"}]

    results: dict[str, dict] = {}
    started = time.perf_counter()
    for name in CASES:
        if name not in selected:
            continue
        case_started = time.perf_counter()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        results[name] = run_case(name, results, tiny=args.tiny)
        results[name]["seconds"] = round(time.perf_counter() - case_started, 1)
        print(f"bench: {name} done in {results[name]['seconds']} s", file=sys.stderr, flush=True)

    rows = [r for name in CASES if name in results for r in results[name]["rows"]]
    elapsed = round(time.perf_counter() - started, 1)
    document = {
        "machine": report.machine(),
        "tiny": args.tiny,
        "seconds": elapsed,
        "rows": rows,
        "cases": {name: {"seconds": r["seconds"], "raw": r["raw"]} for name, r in results.items()},
    }
    report.write_json(args.out, document)
    args.out.with_suffix(".md").write_text(report.format_markdown(rows) + "\n")
    print(report.format_table(rows))
    met = sum(r["met"] is True for r in rows)
    missed = sum(r["met"] is False for r in rows)
    print(f"\n{len(rows)} rows in {elapsed} s; targets met: {met}, missed: {missed}")
    print(f"raw figures: {args.out}")
    if args.profile:
        from bench.profiles import write_all

        for path in write_all(args.out.parent, tiny=args.tiny):
            print(f"profile: {path}")
    return 0


def run_case(name: str, results: dict[str, dict], *, tiny: bool) -> dict:
    if name == "pixel":
        from bench import pixel

        return pixel.run(tiny=tiny)
    if name == "coldstart":
        from bench import coldstart

        return coldstart.run(tiny=tiny)
    if name == "injection":
        from bench import injection

        return injection.run(tiny=tiny)
    if name == "submission":
        from bench import submission

        return submission.run(tiny=tiny)
    if name == "delivery":
        from bench import delivery

        return delivery.run(tiny=tiny)
    if name == "readside":
        from bench import readside

        return readside.run(tiny=tiny)
    if name == "cost":
        from bench import cost

        return cost.run(
            pixel_raw=results["pixel"]["raw"],
            submission_raw=results["submission"]["raw"],
            readside_raw=results.get("readside", {}).get("raw"),
            tiny=tiny,
        )
    if name == "counters":
        from bench import counters

        return counters.run(tiny=tiny)
    if name == "localstack":
        from bench import localstack

        return localstack.run(tiny=tiny)
    if name == "hostile":
        from bench import hostile

        return hostile.run(tiny=tiny)
    raise ValueError(name)


if __name__ == "__main__":
    sys.exit(main())
