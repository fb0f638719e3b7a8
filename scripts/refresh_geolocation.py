"""Move the IP geolocation data to the newest release: iptocc embeds the Regional Internet Registries'
delegation files in its wheel and is released from them every night, so the data's date is the pinned
release's. Needs the package index; `make geolocation` runs it. Tests never do.

    python scripts/refresh_geolocation.py [--version X.Y.Z]

The pin is rewritten in the three files that carry it (requirements.in, requirements-dev.txt and the
layer's requirements.txt, which a test keeps equal) and the new release is installed into the running
virtual environment; `make test` and `sam build` then use it.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = "iptocc"
ROOT = Path(__file__).resolve().parent.parent
PINNED_FILES = (
    ROOT / "requirements.in",
    ROOT / "requirements-dev.txt",
    ROOT / "layers/opentracking/requirements.txt",
)
_PIN = re.compile(rf"^{PACKAGE}==\S+$", re.MULTILINE)


def repin(text: str, version: str) -> str:
    """The requirements text with the package's pin moved to `version`; an error when it has none (a file
    that lost its pin must be looked at, not silently left behind)."""
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)*", version):
        raise ValueError(f"{version!r} is not a release number")
    updated, found = _PIN.subn(f"{PACKAGE}=={version}", text)
    if found != 1:
        raise ValueError(f"expected one {PACKAGE}== pin, found {found}")
    return updated


def newest_version() -> str:
    """The newest release on the package index, as pip sees it (pip's own index configuration applies)."""
    answer = subprocess.run(  # noqa: S603 - our own interpreter, fixed arguments
        [sys.executable, "-m", "pip", "index", "versions", PACKAGE],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    match = re.search(rf"^{PACKAGE} \(([^)]+)\)", answer, re.MULTILINE)
    if not match:
        raise SystemExit(f"pip did not name a release of {PACKAGE}:\n{answer}")
    return match.group(1)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", help="the release to pin (default: the newest on the index)")
    version = parser.parse_args().version or newest_version()
    for path in PINNED_FILES:
        path.write_text(repin(path.read_text(), version))
    # our own interpreter; `version` passed repin's check that it is a release number
    install = [sys.executable, "-m", "pip", "install", "-qq", f"{PACKAGE}=={version}"]
    subprocess.run(install, check=True)  # noqa: S603
    print(f"{PACKAGE} pinned at {version} in {', '.join(str(p.relative_to(ROOT)) for p in PINNED_FILES)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
