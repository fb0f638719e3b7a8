"""Loading the functions' handler modules and the sample events in `events/`."""

from __future__ import annotations

import importlib.util
import json
import sys
from types import ModuleType

from devstack.template import ROOT

EVENTS_DIR = ROOT / "events"


def load_handler(code_uri: str, *, instance: int | None = None) -> ModuleType:
    """Import <code_uri>/app.py under a unique name: every handler module is called `app`. `instance`
    loads another copy of it (another Lambda instance of the same function: its own module globals)."""
    folder = (ROOT / code_uri).resolve()
    name = "handler_" + folder.name + (f"_{instance}" if instance else "")
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, folder / "app.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"no handler module in {folder}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_event(name: str) -> dict:
    return json.loads((EVENTS_DIR / name).read_text())
