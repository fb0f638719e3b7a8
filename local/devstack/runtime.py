"""Calling the template's functions in-process, as Lambda would: their handler, their environment, a
Lambda context. A Lambda instance serves one request at once and Lambda starts more instances when
requests overlap: here each function has up to LOCAL_CONCURRENCY instances (4), each a module of its own
(its own handler globals), started when requests overlap and kept warm.

Lambda's instances are processes and these are threads of one, so what a library keeps per process is
made per thread here: Powertools' metric set (see `_per_thread_metrics`)."""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from devstack.events import LambdaContext
from devstack.handlers import load_handler
from devstack.template import Stack


class _PerThread:
    """A provider attribute that each thread sees a value of its own of (a data descriptor, so it takes
    precedence over the instance's own attribute)."""

    def __init__(self, name: str, fresh: Callable[[Any], Any]) -> None:
        self.name, self.fresh = name, fresh

    def __get__(self, provider: Any, owner: type | None = None) -> Any:
        if provider is None:
            return self
        state = provider.__dict__.setdefault("_per_thread_state", threading.local())
        if not hasattr(state, self.name):
            setattr(state, self.name, self.fresh(provider))
        return getattr(state, self.name)

    def __set__(self, provider: Any, value: Any) -> None:
        # A copy: Metrics hands every provider the same class-level dict, which is the sharing to undo.
        state = provider.__dict__.setdefault("_per_thread_state", threading.local())
        setattr(state, self.name, copy.copy(value))


_metrics_isolated = threading.Lock()


def _per_thread_metrics() -> None:
    """Powertools keeps the metrics an invocation adds in one set per process (a Metrics class attribute)
    and publishes them when the handler returns. Two overlapping invocations in threads of one process
    would publish each other's metrics, and the second would then fail with "Must contain at least one
    metric". What an invocation adds lives in the provider's four per-request attributes: give each
    thread its own (default dimensions stay shared: they are set once, at import)."""
    from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

    with _metrics_isolated:
        if isinstance(AmazonCloudWatchEMFProvider.__dict__.get("metric_set"), _PerThread):
            return
        fresh: dict[str, Callable[[Any], Any]] = {
            "metric_set": lambda provider: {},
            "metadata_set": lambda provider: {},
            "dimension_sets": lambda provider: [],
            "dimension_set": lambda provider: dict(provider.default_dimensions),
        }
        for name, make in fresh.items():
            setattr(AmazonCloudWatchEMFProvider, name, _PerThread(name, make))


def _default_concurrency() -> int:
    try:
        return max(1, int(os.environ.get("LOCAL_CONCURRENCY", "4")))
    except ValueError:
        return 4


@dataclass
class Function:
    logical_id: str
    code_uri: str
    handler: str
    memory_mb: int
    timeout: float
    concurrency: int = field(default_factory=_default_concurrency)
    _available: threading.Condition = field(default_factory=threading.Condition, repr=False)
    _idle: list[ModuleType] = field(default_factory=list, repr=False)
    _instances: int = field(default=0, repr=False)

    def invoke(self, event: dict) -> object:
        module_name, _, function_name = self.handler.rpartition(".")
        if module_name != "app":
            raise ValueError(f"{self.logical_id}: only app.<function> handlers are supported")
        module = self._acquire()
        try:
            context = LambdaContext(
                function_name=self.logical_id,
                memory_limit_in_mb=self.memory_mb,
                timeout_seconds=self.timeout,
                invoked_function_arn=f"arn:aws:lambda:us-east-1:123456789012:function:{self.logical_id}",
            )
            return getattr(module, function_name)(event, context)
        finally:
            with self._available:
                self._idle.append(module)
                self._available.notify()

    def _acquire(self) -> ModuleType:
        """An idle instance, a new one while under the limit, or the next one to become idle."""
        with self._available:
            while not self._idle and self._instances >= self.concurrency:
                self._available.wait()
            if self._idle:
                return self._idle.pop()
            self._instances += 1
            number = self._instances
        _per_thread_metrics()
        try:
            # The first instance is the handler module itself (tests reach it through load_handler too).
            return load_handler(self.code_uri, instance=number if number > 1 else None)
        except BaseException:
            with self._available:
                self._instances -= 1
                self._available.notify()
            raise


def functions(stack: Stack) -> dict[str, Function]:
    defaults = stack.template.get("Globals", {}).get("Function", {})
    found = {}
    for logical_id, resource in stack.functions().items():
        props = {**defaults, **resource.get("Properties", {})}
        found[logical_id] = Function(
            logical_id=logical_id,
            code_uri=props["CodeUri"],
            handler=props["Handler"],
            memory_mb=int(props.get("MemorySize", 128)),
            timeout=float(props.get("Timeout", 3)),
        )
    return found


def apply_environment(stack: Stack, overrides: dict[str, str]) -> dict[str, str]:
    """Put every function's environment into this process (handlers run in-process and read os.environ).

    Functions may not disagree on a variable: one process cannot give them different values."""
    merged: dict[str, str] = {}
    for logical_id in stack.functions():
        for name, value in stack.function_environment(logical_id).items():
            if name in merged and merged[name] != value and name not in overrides:
                raise ValueError(f"{name} differs between functions; the local stack cannot run both")
            merged[name] = value
    merged.update(overrides)
    os.environ.update(merged)
    return merged
