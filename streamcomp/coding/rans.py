"""The project's own range ANS coder, compiled: a band phase's symbols in one call that releases the GIL.

Why: decoding through constriction costs one Python call per run of symbols that share a table
(thousands a chunk) and holds the GIL in each, so a chunk's entropy decoding neither runs at the
speed of its arithmetic nor scales to a second core. Here a call codes every symbol of a band
phase, each under its own table row, in numba-compiled loops that release the GIL.

The coder is rANS with a 63-bit state and 32-bit words (ryg's rans64 layout: the state stays in
[2**31, 2**63), a symbol pops at most one word), at PRECISION bits, as constriction's default
models are. Tables are integer frequencies derived from integer weights by integer arithmetic
(:func:`table`), so encoder and decoder agree on any CPU. A row's escape column, where a table has
one, is followed in the stream by the value's excess past it in exponential-Golomb code of the
row's order, one bit a symbol. A stream is its words in the order the decoder reads them: the
final state (two words, high first), then the words the encoder emitted, last first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from streamcomp.errors import ChunkFormatError

PRECISION = 24
_TOTAL = 1 << PRECISION
_MASK = _TOTAL - 1
_LOW = 1 << 31  # the state's lower bound between symbols
_HALF = _TOTAL >> 1  # one bit's frequency
_MAX_LENGTH = 40  # exponential-Golomb prefix longer than this: a corrupt stream
_WORDS_PER_ESCAPE = 2 * _MAX_LENGTH + 64  # bound on the words an escape's payload emits

_OK, _EXHAUSTED, _BAD_ESCAPE = 0, 1, 2
_ERRORS = {_EXHAUSTED: "stream ends before its symbols do", _BAD_ESCAPE: "escape code is malformed"}


@dataclass(frozen=True)
class Table:
    """Rows of cumulative frequencies summing to 2**PRECISION, each row one distribution.

    ``cum``: (rows, symbols + 1) int32; ``lengths``: (rows, symbols) bits of each symbol;
    ``escape``: the column whose symbol is followed by an excess (-1: none); ``orders``: each
    row's exponential-Golomb order for that excess."""

    cum: np.ndarray
    lengths: np.ndarray
    escape: int
    orders: np.ndarray

    def escape_bits(self, excess: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Bits the payloads of escaped values with ``excess`` past the escape column take."""
        k = self.orders[rows]
        q = (np.asarray(excess, np.int64) >> k) + 1
        return 2 * _bit_length(q) - 1 + k


def table(weights: np.ndarray, escape: int = -1, orders: np.ndarray | None = None) -> Table:
    """A :class:`Table` of (rows, symbols) positive integer ``weights``: each frequency is at
    least 1 and the rounding's remainder goes to the row's most frequent symbol."""
    w = np.asarray(weights, np.int64)
    if w.ndim != 2 or w.min() < 1 or w.shape[1] >= _TOTAL or w.max() >= 1 << 30:
        raise ValueError("table weights must be a 2-D array of positive integers below 2**30")
    free = _TOTAL - w.shape[1]
    freq = w * free // w.sum(axis=1, keepdims=True) + 1
    freq[np.arange(len(w)), freq.argmax(axis=1)] += _TOTAL - freq.sum(axis=1)
    cum = np.zeros((len(w), w.shape[1] + 1), np.int32)
    cum[:, 1:] = np.cumsum(freq, axis=1)
    lengths = PRECISION - np.log2(freq)
    if orders is None:
        orders = np.zeros(len(w), np.int64)
    return Table(cum, lengths, escape, np.asarray(orders, np.int64))


def _bit_length(q: np.ndarray) -> np.ndarray:
    return np.floor(np.log2(np.maximum(q, 1))).astype(np.int64) + 1


class Encoder:
    """Pushes runs of symbols in the reverse of the order a :class:`Decoder` pops them."""

    def __init__(self) -> None:
        self._state = np.array([_LOW], np.int64)
        self._words: list[np.ndarray] = []

    def push(self, values: np.ndarray, rows: np.ndarray, codes: Table) -> None:
        """Code ``values`` (non-negative) under ``codes``' ``rows``, so that a decoder's
        :meth:`Decoder.pop` of the same rows returns them in order; values at or past the escape
        column (all of them must be below it where there is none) escape with their excess."""
        values = np.ascontiguousarray(values, np.int64)
        rows = np.ascontiguousarray(rows, np.int64)
        if not len(values):
            return
        width = codes.cum.shape[1] - 1
        limit = codes.escape if codes.escape >= 0 else width
        escaped = int(np.count_nonzero(values >= limit)) if codes.escape >= 0 else 0
        if codes.escape < 0 and (values.max() >= width or values.min() < 0):
            raise ValueError("a value lies outside its table")
        out = np.empty(len(values) + escaped * _WORDS_PER_ESCAPE, np.uint32)
        n = _encode(self._state, out, values, rows, codes.cum, codes.escape, codes.orders)
        self._words.append(out[:n])

    def finish(self) -> bytes:
        """The stream: final state, then the emitted words in reverse."""
        x = int(self._state[0])
        emitted = np.concatenate([*self._words, np.array([x & 0xFFFFFFFF, x >> 32], np.uint32)])
        return emitted[::-1].astype("<u4").tobytes()


class Decoder:
    """Pops what an :class:`Encoder` pushed, run by run; :meth:`finish` checks the stream was whole."""

    def __init__(self, stream: bytes) -> None:
        if len(stream) % 4 or len(stream) < 8:
            raise ChunkFormatError("entropy-coded stream is not a whole number of 32-bit words, at least two")
        self._words = np.frombuffer(stream, "<u4").astype(np.uint32)
        x = int(self._words[0]) << 32 | int(self._words[1])
        if not _LOW <= x < 1 << 63:
            raise ChunkFormatError("entropy-coded stream starts with an invalid state")
        self._cursor = np.array([x, 2], np.int64)

    def pop(self, rows: np.ndarray, codes: Table) -> np.ndarray:
        """One value per entry of ``rows`` (int64), under ``codes``."""
        rows = np.ascontiguousarray(rows, np.int64)
        out = np.empty(len(rows), np.int64)
        error = _decode(self._words, self._cursor, rows, codes.cum, codes.escape, codes.orders, out)
        if error:
            raise ChunkFormatError(f"entropy-coded stream is corrupt: {_ERRORS[error]}")
        return out

    def finish(self) -> None:
        if self._cursor[0] != _LOW or self._cursor[1] != len(self._words):
            raise ChunkFormatError("entropy-coded stream is corrupt: it does not end where its symbols do")


_JIT = {"nogil": True, "cache": True}


@numba.njit(**_JIT)
def _put(x, out, n, start, freq):
    if x >= ((_LOW >> PRECISION) << 32) * freq:
        out[n] = x & 0xFFFFFFFF
        n += 1
        x >>= 32
    return ((x // freq) << PRECISION) + (x % freq) + start, n


@numba.njit(**_JIT)
def _encode(state, out, values, rows, cum, escape, orders):
    """Push ``values`` last to first; returns the number of words emitted into ``out``."""
    x, n = state[0], 0
    for i in range(len(values) - 1, -1, -1):
        v, r = values[i], rows[i]
        if escape >= 0 and v >= escape:
            excess, k = v - escape, orders[r]
            for b in range(k):  # the low bits, read last, highest first
                x, n = _put(x, out, n, ((excess >> b) & 1) * _HALF, _HALF)
            q = (excess >> k) + 1
            length = 0
            while q >> length:
                length += 1
            for b in range(length):  # q's bits, read after the prefix, highest (always 1) first
                x, n = _put(x, out, n, ((q >> b) & 1) * _HALF, _HALF)
            for _ in range(length - 1):  # the prefix: a zero for each bit of q past the first
                x, n = _put(x, out, n, 0, _HALF)
            v = escape
        x, n = _put(x, out, n, cum[r, v], cum[r, v + 1] - cum[r, v])
    state[0] = x
    return n


@numba.njit(**_JIT)
def _bit(words, x, pos):
    """One equiprobable bit: (bit, state, position), position -1 where the words ran out."""
    slot = x & _MASK
    bit = 1 if slot >= _HALF else 0
    x = _HALF * (x >> PRECISION) + slot - bit * _HALF
    if x < _LOW:
        if pos >= len(words):
            return 0, x, -1
        x = (x << 32) | np.int64(words[pos])
        pos += 1
    return bit, x, pos


@numba.njit(**_JIT)
def _decode(words, cursor, rows, cum, escape, orders, out):
    """Pop one value per row into ``out``; returns an error code (0: none)."""
    x, pos = cursor[0], cursor[1]
    for i in range(len(rows)):
        r = rows[i]
        slot = x & _MASK
        s = 0
        while cum[r, s + 1] <= slot:
            s += 1
        x = (cum[r, s + 1] - cum[r, s]) * (x >> PRECISION) + slot - cum[r, s]
        if x < _LOW:
            if pos >= len(words):
                return _EXHAUSTED
            x = (x << 32) | np.int64(words[pos])
            pos += 1
        if s == escape:
            zeros, bit = 0, 0
            while bit == 0:  # the prefix: as many zeros as q has bits past its leading one
                bit, x, pos = _bit(words, x, pos)
                if pos < 0:
                    return _EXHAUSTED
                zeros += 1 - bit
                if zeros > _MAX_LENGTH:
                    return _BAD_ESCAPE
            q = 1
            for _ in range(zeros + orders[r]):  # q's other bits, then the excess's low bits
                bit, x, pos = _bit(words, x, pos)
                if pos < 0:
                    return _EXHAUSTED
                q = (q << 1) | bit
            s = escape + q - (1 << orders[r])
        out[i] = s
    cursor[0], cursor[1] = x, pos
    return _OK
