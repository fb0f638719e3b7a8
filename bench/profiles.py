"""Where the time goes, measured: cProfile of each hot path (and `-X importtime` of the pixel's cold
start), written to bench/results/profile-*.txt. `make bench PROFILE=1` (or `python -m bench --profile`)."""

from __future__ import annotations

import cProfile
import io
import json
import pstats
from collections.abc import Callable
from pathlib import Path

from bench import stubs
from bench.env import captured_output, environment, function_env, lambda_context, stub_stack

TOP = 30


def _profile(call: Callable[[], object], repeat: int) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(repeat):
        call()
    profiler.disable()
    return _report(profiler)


def _report(profiler: cProfile.Profile) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("cumulative").print_stats(TOP)
    stats.sort_stats("tottime").print_stats(TOP)
    return out.getvalue()


def pixel() -> str:
    from bench.pixel import COPY_ID, pixel_event
    from devstack.handlers import load_handler
    from opentracking.tracking import tokens

    stack = stub_stack()
    env = function_env(stack, "PixelFunction")
    with environment(env), stubs.AwsStub.from_env(env), captured_output():
        handler = load_handler("functions/pixel")
        context = lambda_context(stack, "PixelFunction")
        keyring = tokens.KeyRing.from_secret(json.loads(stubs.TOKEN_SECRET))
        event = pixel_event(tokens.issue_token(keyring, COPY_ID, stubs.BENCH_DOMAIN))
        handler.lambda_handler(event, context)
        return _profile(lambda: handler.lambda_handler(event, context), 3000)


def submission(route: str, recipients: int) -> str:
    from bench.submission import make_form, submit

    stack = stub_stack()
    env = function_env(stack, "SubmitFunction")
    mime = route == "mime"
    with environment(env), stubs.AwsStub.from_env(env), captured_output():
        form = make_form(recipients, mime=mime)
        submit(make_form(1, mime=mime), mime=mime)
        return _profile(lambda: submit(form, mime=mime), 1)


def injection(size_label: str = "5 MB") -> str:
    from bench.injection import SYNTHETIC_SIZES, URL, synthetic_html, wrap
    from opentracking.mail.injection import inject

    message = wrap(synthetic_html(int(SYNTHETIC_SIZES[size_label] / 1.08)).encode())
    return _profile(lambda: inject(message, URL), 5)


def cold_start(directory: Path) -> str:
    from bench.coldstart import import_profile

    first_call = directory / "pixel-first-call.prof"
    lines = ["python -X importtime, self time by top-level package (ms), import of the handler module", ""]
    for name, ranked in import_profile(first_call=first_call).items():
        lines.append(f"{name}:")
        lines += [f"  {ms:8.1f}  {package}" for package, ms in ranked]
        lines.append("")
    lines.append("cProfile of the pixel's first invocation in a fresh process:")
    out = io.StringIO()
    pstats.Stats(str(first_call), stream=out).strip_dirs().sort_stats("cumulative").print_stats(TOP)
    first_call.unlink(missing_ok=True)
    return "\n".join(lines) + out.getvalue()


def read_side(tiny: bool) -> str:
    """The stream consumer and the events API against moto server. Only this thread is profiled: time in
    socket reads is waiting for moto (a stand-in for DynamoDB), the rest is ours."""
    from bench.readside import profile

    return "\n".join(f"===== {name} =====\n{_report(p)}" for name, p in profile(tiny=tiny).items())


def write_all(directory: Path, *, tiny: bool = False) -> list[Path]:
    jobs = {
        "pixel": pixel,
        "cold-start": lambda: cold_start(directory),
        "injection-5MB": lambda: injection("50 KB" if tiny else "5 MB"),
        "submission-mime-100": lambda: submission("mime", 3 if tiny else 100),
        "submission-form-100": lambda: submission("form", 3 if tiny else 100),
        "read-side": lambda: read_side(tiny),
    }
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, job in jobs.items():
        path = directory / f"profile-{name}.txt"
        path.write_text(job())
        written.append(path)
    return written
