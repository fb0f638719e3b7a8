"""The coverage-guided fuzzer (atheris) on the injector, the link rewriter and the token verifiers, bounded
and seeded, with the corpus's smaller messages as its starting points."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from devstack.process import python_environment
from devstack.template import ROOT
from tests.helpers.corpus import CORPUS


@pytest.mark.parametrize(
    ("target", "runs"),
    [("injector", 20000), ("links", 5000), ("tokens", 10000), ("click_tokens", 10000), ("shapes", 1000)],
)
def test_fuzz_target_finds_nothing(target, runs, tmp_path):
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    if target in ("injector", "links", "shapes") and (CORPUS / "mime").is_dir():
        for path in sorted((CORPUS / "mime").glob("*.eml")):
            if path.stat().st_size <= 8192:
                shutil.copy(path, seeds / path.name)
    env = python_environment()
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "fuzz" / "fuzz_targets.py"),
            target,
            f"-runs={runs}",
            "-seed=1",
            "-max_len=8192",
            f"-artifact_prefix={tmp_path}/",
            str(seeds),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Done {runs} runs" in result.stderr
