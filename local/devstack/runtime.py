"""Calling the template's functions in-process, as Lambda would: their handler, their environment, a
Lambda context, one invocation at a time per function (a Lambda instance serves one request at once)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from types import ModuleType

from devstack.events import LambdaContext
from devstack.handlers import load_handler
from devstack.template import Stack


@dataclass
class Function:
    logical_id: str
    code_uri: str
    handler: str
    memory_mb: int
    timeout: float
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _module: ModuleType | None = field(default=None, repr=False)

    def invoke(self, event: dict) -> object:
        module_name, _, function_name = self.handler.rpartition(".")
        if module_name != "app":
            raise ValueError(f"{self.logical_id}: only app.<function> handlers are supported")
        with self._lock:
            if self._module is None:
                self._module = load_handler(self.code_uri)
            context = LambdaContext(
                function_name=self.logical_id,
                memory_limit_in_mb=self.memory_mb,
                timeout_seconds=self.timeout,
                invoked_function_arn=f"arn:aws:lambda:us-east-1:123456789012:function:{self.logical_id}",
            )
            return getattr(self._module, function_name)(event, context)


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
