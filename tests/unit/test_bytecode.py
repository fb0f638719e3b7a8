"""`make build`'s bytecode step (devstack.bytecode): every module of every artifact compiled with unchecked
hashes, which Python loads from a read-only package without looking at the source's time."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from devstack import bytecode


def test_every_artifact_gets_unchecked_hash_bytecode_the_runtime_loads(tmp_path):
    layer = tmp_path / "OpenTrackingLayer" / "python" / "pkg"
    function = tmp_path / "PixelFunction"
    layer.mkdir(parents=True)
    function.mkdir()
    (layer / "__init__.py").write_text("")
    (layer / "mod.py").write_text("VALUE = 42\n")
    (function / "app.py").write_text("def lambda_handler(event, context):\n    return 1\n")
    (tmp_path / "template.yaml").write_text("Resources: {}\n")

    assert bytecode.compile_artifacts(tmp_path) == 2
    tag = sys.implementation.cache_tag
    for source in (layer / "__init__.py", layer / "mod.py", function / "app.py"):
        compiled = source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
        assert compiled.read_bytes()[4:8] == b"\x01\x00\x00\x00"  # hash-based, never checked
    # loaded as it is, even when the source's time says it is newer (as after packaging)
    (layer / "mod.py").write_text("VALUE = 0  # changed after the build: the bytecode still answers\n")
    spec = importlib.util.spec_from_file_location("mod", layer / "mod.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.VALUE == 42


def test_source_that_does_not_compile_fails_the_build(tmp_path):
    (tmp_path / "ApiFunction").mkdir()
    (tmp_path / "ApiFunction" / "app.py").write_text("def broken(:\n")
    with pytest.raises(RuntimeError, match="does not compile"):
        bytecode.compile_artifacts(tmp_path)
