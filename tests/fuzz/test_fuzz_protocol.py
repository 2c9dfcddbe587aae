"""The fuzz target of the protocol decoder (tests/fuzz/fuzz_protocol.py), run in the normal suite:
over its seed corpus and over Hypothesis bytes (no atheris needed), and, where atheris is
installed (the ``fuzz`` extra), as the libFuzzer script ``make fuzz`` runs, for a few runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messenger import protocol
from messenger.exceptions import InvalidCommand
from tests.fuzz.fuzz_protocol import SEEDS, check

PROPERTY = settings(max_examples=300)  # the profile: tests/conftest.py
SCRIPT = Path(__file__).resolve().parent / "fuzz_protocol.py"
DICTIONARY = SCRIPT.parent / "protocol.dict"
SEED_FILES = sorted(SEEDS.iterdir())


def test_the_seed_corpus_covers_each_command() -> None:
    names = {path.name for path in SEED_FILES}
    assert {"message", "tip", "list", "read", "typing", "sync", "lone-surrogate", "invalid-utf8"} <= names


@pytest.mark.parametrize("seed", SEED_FILES, ids=lambda path: path.name)
def test_the_seeds(seed: Path) -> None:
    check(seed.read_bytes())


@PROPERTY
@given(st.binary(max_size=400))
def test_any_bytes(data: bytes) -> None:
    check(data)


@PROPERTY
@given(st.sampled_from(SEED_FILES), st.integers(0, 200), st.binary(max_size=12), st.integers(0, 12))
def test_seeds_cut_and_spliced(seed: Path, at: int, insert: bytes, drop: int) -> None:
    """Seeds with bytes put in and taken out: near-valid JSON reaches further than random bytes."""
    data = seed.read_bytes()
    check(data[:at] + insert + data[at + drop :])


def test_the_target_fails_on_a_decoder_that_breaks_its_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not vacuous: a decoder that raises something else, or lets through what cannot be
    published, makes the target fail."""
    seed = (SEEDS / "message").read_bytes()

    def raises(_payload: bytes) -> object:
        raise ValueError("not an InvalidCommand")

    monkeypatch.setattr(protocol, "parse_command", raises)
    with pytest.raises(ValueError, match="not an InvalidCommand"):
        check(seed)

    def refuses_with_a_surrogate(_payload: bytes) -> object:
        raise InvalidCommand("detail with \ud800", code="invalid_payload")

    monkeypatch.setattr(protocol, "parse_command", refuses_with_a_surrogate)
    with pytest.raises(UnicodeEncodeError):
        check(seed)


def test_the_libfuzzer_script_runs(tmp_path: Path) -> None:
    """``make fuzz`` in small: atheris, the seeds and the dictionary, a few thousand runs."""
    # in the dev extras on Linux x86_64 (where atheris ships wheels), so CI always runs it
    pytest.importorskip("atheris", reason="atheris ships wheels for Linux x86_64 only")
    found = tmp_path / "corpus"
    found.mkdir()
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "-runs=3000", f"-dict={DICTIONARY}", str(found), str(SEEDS)],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=tmp_path,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Done 3000 runs" in run.stderr
    assert not list(tmp_path.glob("crash-*"))
