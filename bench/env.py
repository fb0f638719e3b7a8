"""The environment every benchmark runs in: each function's variables from template.yaml, fake
credentials, fresh library caches, and stdout (EMF metrics, JSON logs) captured and counted."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from devstack.template import Stack

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
STACK_NAME = "opentracking-bench"

BASE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    # No X-Ray daemon here; outside Lambda the Powertools tracer disables itself anyway.
    "POWERTOOLS_TRACE_DISABLED": "true",
}
_UNSET = ("AWS_PROFILE", "AWS_ENDPOINT_URL")


def stub_stack() -> Stack:
    """The template with every resource given the physical name the local stack would give it."""
    stack = Stack(name=STACK_NAME)
    for logical_id, resource in stack.resources.items():
        name = f"{STACK_NAME}-{logical_id}"
        if resource["Type"] == "AWS::SecretsManager::Secret":
            name = f"arn:aws:secretsmanager:{stack.region}:{stack.account}:secret:{name}"
        elif resource["Type"] == "AWS::S3::Bucket":
            name = name.lower()
        stack.refs.setdefault(logical_id, name)
    return stack


def function_env(stack: Stack, logical_id: str) -> dict[str, str]:
    """What Lambda would set for this function (the template's Globals and its own Environment)."""
    return {**stack.function_environment(logical_id), **BASE_ENV}


def reset_library() -> None:
    """Forget cached clients, keys and settings, as a fresh Lambda execution environment would. Only
    modules already imported are touched: importing them here would create the Powertools singletons
    under whatever environment happens to be set."""
    resets = {
        "opentracking.core.aws": "reset_clients",
        "opentracking.tracking.tokens": "reset_cache",
        "opentracking.http.gateway": "reset_cache",
    }
    for module_name, function in resets.items():
        module = sys.modules.get(module_name)
        if module is not None:
            getattr(module, function)()
    config = sys.modules.get("opentracking.core.config")
    if config is not None:
        config.settings.cache_clear()


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    for name in _UNSET:
        os.environ.pop(name, None)
    os.environ.update(env)
    reset_library()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        reset_library()


class CountingSink(io.TextIOBase):
    """Swallows what a function prints (CloudWatch Logs would ingest it) and counts the bytes."""

    def __init__(self) -> None:
        self.bytes = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.bytes += len(text.encode("utf-8", "replace"))
        return len(text)


@contextlib.contextmanager
def captured_output() -> Iterator[CountingSink]:
    """Redirect stdout, and the log handlers that captured it at import (Powertools Logger), to a sink."""
    sink = CountingSink()
    original = sys.stdout
    handlers = [
        handler
        for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
        if isinstance(logger, logging.Logger)
        for handler in logger.handlers
        if isinstance(handler, logging.StreamHandler) and handler.stream in (original, sys.__stdout__)
    ]
    sys.stdout = sink
    previous = [handler.setStream(sink) for handler in handlers]
    try:
        yield sink
    finally:
        sys.stdout = original
        for handler, stream in zip(handlers, previous, strict=True):
            handler.setStream(stream)


def lambda_context(stack: Stack, logical_id: str):
    from devstack.events import LambdaContext

    return LambdaContext(
        function_name=f"{STACK_NAME}-{logical_id}", memory_limit_in_mb=memory_size(stack, logical_id)
    )


def function_property(stack: Stack, logical_id: str, name: str, default: object) -> object:
    """A function's property as SAM resolves it: its own, else Globals.Function's, else Lambda's default."""
    own = stack.functions()[logical_id].get("Properties", {}).get(name)
    if own is not None:
        return own
    return stack.template.get("Globals", {}).get("Function", {}).get(name, default)


def memory_size(stack: Stack, logical_id: str) -> int:
    return int(function_property(stack, logical_id, "MemorySize", 128))


def architecture(stack: Stack, logical_id: str) -> str:
    return function_property(stack, logical_id, "Architectures", ["x86_64"])[0]


def timeout_s(stack: Stack, logical_id: str) -> float:
    return float(function_property(stack, logical_id, "Timeout", 3))


def traced(stack: Stack, logical_id: str) -> bool:
    """Tracing: Active makes Lambda sample and send traces itself. PassThrough (Lambda's default) traces only
    requests that arrive with a sampled trace header, and HTTP APIs send none: no traces."""
    return function_property(stack, logical_id, "Tracing", "PassThrough") == "Active"
