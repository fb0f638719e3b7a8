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


def untouched() -> dict[str, str]:
    """The corpus messages no edit may change, and why (checked by reading the files: signed or
    DKIM-signed). The reasons are the library's constants, imported here so this stays a data file."""
    from opentracking.mail.injection import DKIM_SIGNED, SIGNED

    return {
        "mimekit__multipart-no-end-boundary.eml": DKIM_SIGNED,
        "nodemailer__watch-html.eml": DKIM_SIGNED,
        "phpmmp__x-mac-cyrillic-html.eml": DKIM_SIGNED,
        "spamscope__fr-newsletter-related.eml": DKIM_SIGNED,
        "flanker__enclosed-rfc822.eml": DKIM_SIGNED,
        "stalwart-dovecot__signed-alternative-html-first.eml": SIGNED,
        "webklex__pec-smime-signed.eml": SIGNED,
    }
