"""Bytecode in the build: every module `sam build` wrote (the layer and each function) compiled for the
runtime's Python, so a cold start reads bytecode instead of compiling the layer (measured: the pixel's cold
start 3.8x longer without it, `make bench`'s cold start case).

`sam build` leaves no `.pyc`, and a deployed function cannot write one: `/opt` (the layer) and
`/var/task` are read-only. Timestamp-checked bytecode would not do either: packaging changes the files'
times, so Python would find it stale and compile again. The bytecode is written with unchecked hashes,
which Python loads without comparing anything to the source: right for files that never change after the
build. The magic number is the interpreter's: build with the runtime's minor version (python3.13), as
`make build` does.

    python -m devstack.bytecode .aws-sam/build
"""

from __future__ import annotations

import compileall
import py_compile
import sys
from pathlib import Path


def artifact_dirs(build_dir: Path) -> list[Path]:
    """The folders `sam build` wrote one artifact into each (layer and functions), not its template."""
    return sorted(path for path in build_dir.iterdir() if path.is_dir())


def compile_artifacts(build_dir: Path, *, workers: int = 0) -> int:
    """Compile every .py below each artifact; the number of artifacts. Raises if one does not compile (a
    build that ships source Python cannot load is broken either way)."""
    artifacts = artifact_dirs(build_dir)
    for artifact in artifacts:
        ok = compileall.compile_dir(
            artifact,
            quiet=1,
            workers=workers,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )
        if not ok:
            raise RuntimeError(f"{artifact} has Python that does not compile")
    return len(artifacts)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print(__doc__, file=sys.stderr)
        return 2
    if sys.version_info[:2] != (3, 13):
        found = sys.version.split()[0]
        print(f"python3.13 builds the bytecode the runtime loads, not {found}", file=sys.stderr)
        return 2
    count = compile_artifacts(Path(argv[0]))
    print(f"bytecode (unchecked hash) written for {count} artifacts in {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
