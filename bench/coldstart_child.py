"""One cold start in this fresh process (run by bench.coldstart, one process per measurement).

    python -m bench.coldstart_child floor|<code uri> <event.json or -> <result.json> [<first-call.prof>]

The clock starts at the top of this module: interpreter start-up and the few standard-library modules the
harness itself needs (imported above the clock) are left out for every variant alike. AWS is answered
in-process at the botocore layer, patched only when the code under test imports botocore, and packages
that the Lambda runtime does not have (awscrt, pyOpenSSL) are hidden.
"""

import json
import os
import pathlib
import sys
import time
import types

_WALL0 = time.perf_counter()
_CPU0 = time.process_time()

from bench import stubs  # noqa: E402  (after the clock on purpose: its cost is the same for every variant)

ROOT = pathlib.Path(__file__).resolve().parents[1]


class _Context:
    """The Lambda context Powertools reads."""

    function_name = "bench-cold-start"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench-cold-start"
    aws_request_id = "00000000-0000-4000-8000-000000000000"
    log_group_name = "/aws/lambda/bench-cold-start"
    log_stream_name = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 29000


def main(variant: str, event_path: str, result_path: str, profile_path: str = "") -> None:
    stubs.hide_non_lambda_packages()
    stub = stubs.AwsStub.from_env(os.environ).start(lazy=True)
    status = None
    if variant == "floor":
        import boto3

        boto3.client("dynamodb")
        wall1, cpu1 = time.perf_counter(), time.process_time()
        wall2, cpu2 = wall1, cpu1
    else:
        # devstack.handlers takes ROOT from devstack.template, whose cfn-lint import would dwarf the
        # function's own imports: give it ROOT without that import.
        template = types.ModuleType("devstack.template")
        template.ROOT = ROOT
        sys.modules["devstack.template"] = template
        from devstack.handlers import load_handler

        module = load_handler(variant)
        wall1, cpu1 = time.perf_counter(), time.process_time()
        event = json.loads(pathlib.Path(event_path).read_text())
        context = _Context()
        wall2, cpu2 = time.perf_counter(), time.process_time()
        if profile_path:  # where the first invocation's time goes (bench.profiles)
            import cProfile

            profiler = cProfile.Profile()
            response = profiler.runcall(module.lambda_handler, event, context)
            profiler.dump_stats(profile_path)
        else:
            response = module.lambda_handler(event, context)
        # HTTP functions answer a status code; the scheduled one returns its report.
        status = response.get("statusCode", "ok") if isinstance(response, dict) else "ok"
    wall3, cpu3 = time.perf_counter(), time.process_time()
    result = {
        "variant": variant,
        "import_ms": (wall1 - _WALL0) * 1000,
        "invoke_ms": (wall3 - wall2) * 1000,
        "total_ms": (wall1 - _WALL0 + wall3 - wall2) * 1000,
        "cpu_ms": (cpu1 - _CPU0 + cpu3 - cpu2) * 1000,
        "status": status,
        "modules": len(sys.modules),
        "requests": stub.snapshot(),
    }
    pathlib.Path(result_path).write_text(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:5])
