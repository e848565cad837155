"""Checkpoint fingerprints are tied to the content of the job's inputs (issue 25)."""

from __future__ import annotations

import os

import pytest

from bmodesep.errors import DataError
from bmodesep.products import checkpoint


def test_fingerprint_follows_the_content_of_the_inputs_not_their_names_or_times(tmp_path):
    a, b = tmp_path / "masks.h5", tmp_path / "signal.h5"
    a.write_bytes(b"mask bytes")
    b.write_bytes(b"signal bytes")
    config = {"compsep": {"chunks": 2}}
    first = checkpoint.fingerprint(config, [a, b], chunk=0)
    assert checkpoint.fingerprint(config, [a, b], chunk=0) == first
    assert checkpoint.fingerprint(config, [a, None, b], chunk=0) == first  # absent optionals
    assert checkpoint.fingerprint(config, [b, a], chunk=0) != first  # roles are positional
    assert checkpoint.fingerprint(config, [a, b], chunk=1) != first
    stat = b.stat()
    b.write_bytes(b"signal bytez")  # same size, same modification time: other content
    os.utime(b, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert checkpoint.fingerprint(config, [a, b], chunk=0) != first


def test_fingerprint_records_the_numerical_libraries(monkeypatch, tmp_path):
    config = {"npe": {"seed": 0}}
    first = checkpoint.fingerprint(config)
    versions = dict(checkpoint.library_versions(), numpy="0.0-other")
    monkeypatch.setattr(checkpoint, "library_versions", lambda: versions)
    assert checkpoint.fingerprint(config) != first


def test_an_unreadable_input_is_one_error_naming_it(tmp_path):
    missing = tmp_path / "spectra.h5"
    with pytest.raises(DataError, match=str(missing)):
        checkpoint.fingerprint({}, [missing])
