"""Debian's headless Chromium as a recipient's mail client: it renders a copy's HTML from a file, with the
tracking host mapped to the local stack (the recipient's DNS would send it to us), and returns the DOM."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
AVAILABLE = shutil.which("chromium") is not None
MISSING = "Debian chromium is missing: `make system-deps`"


def render(
    page: Path,
    *,
    profile: Path,
    host: str,
    port: int,
    user_agent: str,
    extra: Iterable[str] = (),
    budget_ms: int = 5000,
) -> subprocess.CompletedProcess:
    """Load `page` (a file) in headless Chromium; `host` resolves to 127.0.0.1:`port`. stdout is the DOM."""
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            f"--host-resolver-rules=MAP {host} 127.0.0.1:{port}",
            f"--user-agent={user_agent}",
            f"--virtual-time-budget={budget_ms}",
            *extra,
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
