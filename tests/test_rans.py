"""The compiled rANS coder: exact round trips, escapes, its own size estimate, and corrupt streams
failing with a format error instead of garbage."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from streamcomp.coding import rans
from streamcomp.coding.context_model import PAIRS, compiled_table
from streamcomp.errors import ChunkFormatError


def _draw(codes: rans.Table, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Values distributed as the rows' tables say (the escape column's mass given to excesses)."""
    slots = rng.integers(0, 1 << rans.PRECISION, len(rows))
    values = np.array([np.searchsorted(codes.cum[r], s, side="right") - 1 for r, s in zip(rows, slots, strict=True)])
    escaped = values == codes.escape
    values[escaped] += rng.geometric(1 / (1 + 2.0 ** codes.orders[rows[escaped]])) - 1
    return values


def test_table_frequencies_are_integers_that_fill_the_precision():
    codes = rans.table(np.array([[1, 1, 2, 4], [1000, 1, 1, 1]]))
    freq = np.diff(codes.cum, axis=1)
    assert np.all(codes.cum[:, -1] == 1 << rans.PRECISION) and freq.min() >= 1
    assert freq[0].tolist() == [2097152, 2097152, 4194304, 8388608]  # pinned: a change here changes the format
    assert np.allclose(codes.lengths, rans.PRECISION - np.log2(freq))
    with pytest.raises(ValueError, match="positive integers"):
        rans.table(np.array([[0, 1]]))


def test_round_trip_under_per_symbol_tables_with_escapes_matches_its_estimate():
    rng = np.random.default_rng(0)
    codes = compiled_table(63, True)
    rows = rng.integers(0, PAIRS, 20_000)
    values = _draw(codes, rows, rng)
    values[::997] += 1 << 30  # excesses far past the tables
    assert (values >= codes.escape).sum() > 100
    encoder = rans.Encoder()
    encoder.push(values, rows, codes)
    stream = encoder.finish()
    decoder = rans.Decoder(stream)
    assert np.array_equal(decoder.pop(rows, codes), values)
    decoder.finish()
    assert len(stream) == pytest.approx(codes.bits(values, rows) / 8, abs=16)


def test_runs_pop_in_the_order_they_were_pushed_backwards():
    rng = np.random.default_rng(1)
    small = rans.table(np.array([[9, 3, 1], [1, 1, 1]]))
    large = compiled_table(15, False)
    runs = [
        (rng.integers(0, 3, 50), rng.integers(0, 2, 50), small),
        (rng.integers(0, 16, 7), rng.integers(0, PAIRS, 7), large),
        (np.zeros(0, np.int64), np.zeros(0, np.int64), small),
        (rng.integers(0, 3, 3000), np.ones(3000, np.int64), small),
    ]
    encoder = rans.Encoder()
    for values, rows, codes in reversed(runs):
        encoder.push(values, rows, codes)
    decoder = rans.Decoder(encoder.finish())
    for values, rows, codes in runs:
        assert np.array_equal(decoder.pop(rows, codes), values)
    decoder.finish()


def test_a_value_outside_a_table_without_escape_is_refused():
    with pytest.raises(ValueError, match="outside its table"):
        rans.Encoder().push(np.array([3]), np.array([0]), rans.table(np.array([[1, 1, 1]])))


def test_corrupt_streams_fail_with_a_format_error():
    rng = np.random.default_rng(2)
    codes = compiled_table(63, True)
    rows = rng.integers(0, PAIRS, 5000)
    values = _draw(codes, rows, rng)
    encoder = rans.Encoder()
    encoder.push(values, rows, codes)
    stream = encoder.finish()
    with pytest.raises(ChunkFormatError, match="whole number"):
        rans.Decoder(stream[:-2])
    with pytest.raises(ChunkFormatError, match="invalid state"):
        rans.Decoder(b"\0" * 8)
    with pytest.raises(ChunkFormatError, match="ends before"):
        rans.Decoder(stream[: len(stream) // 2]).pop(rows, codes)
    decoder = rans.Decoder(stream + b"\0\0\0\0")
    decoder.pop(rows, codes)
    with pytest.raises(ChunkFormatError, match="does not end"):
        decoder.finish()
    flipped = bytearray(stream)
    flipped[len(stream) // 2] ^= 0x40
    with pytest.raises(ChunkFormatError):
        decoder = rans.Decoder(bytes(flipped))
        assert np.array_equal(decoder.pop(rows, codes), values)  # a flip that happens to decode...
        decoder.finish()  # ...cannot also end on the initial state


def test_threads_decode_their_own_streams_at_once():
    """The decoder releases the GIL; each thread's stream must still come back exactly."""
    rng = np.random.default_rng(3)
    codes = compiled_table(63, True)
    jobs = []
    for _ in range(4):
        rows = rng.integers(0, PAIRS, 200_000)
        values = _draw(codes, rows[:2000], rng)
        values = np.resize(values, len(rows))
        encoder = rans.Encoder()
        encoder.push(np.minimum(values, codes.escape + 100), rows, codes)
        jobs.append((encoder.finish(), rows, np.minimum(values, codes.escape + 100)))
    results = [None] * len(jobs)

    def work(i):
        stream, rows, _ = jobs[i]
        decoder = rans.Decoder(stream)
        results[i] = decoder.pop(rows, codes)
        decoder.finish()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(r, job[2]) for r, job in zip(results, jobs, strict=True))
