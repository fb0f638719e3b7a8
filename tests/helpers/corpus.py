"""The shared corpus of real HTML emails and MIME messages (../shared/corpus, or OPENTRACKING_CORPUS): test
data for the injector and the link rewriter, read in place, never copied into this repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CORPUS = Path(
    os.environ.get("OPENTRACKING_CORPUS") or Path(__file__).resolve().parents[3] / "shared" / "corpus"
)


def require_corpus() -> None:
    """Skip the calling test module, saying why, on a machine without the corpus."""
    if not (CORPUS / "html").is_dir() or not (CORPUS / "mime").is_dir():
        pytest.skip(
            f"corpus tier skipped: no corpus with html/ and mime/ at {CORPUS} "
            "(set OPENTRACKING_CORPUS to its location to run these tests)",
            allow_module_level=True,
        )


def names(kind: str) -> list[str]:
    """The files of one part of the corpus ("html" or "mime"), by name."""
    return sorted(path.name for path in (CORPUS / kind).iterdir() if path.is_file())
