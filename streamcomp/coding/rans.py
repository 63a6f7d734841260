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

_OK, _EXHAUSTED, _BAD_ESCAPE = 0, 1, 2  # the decoder's outcomes
_OUTSIDE, _NO_ROOM = -1, -2  # the encoder's failures (else the words it emitted)
_ERRORS = {_EXHAUSTED: "stream ends before its symbols do", _BAD_ESCAPE: "escape code is malformed"}


@dataclass(frozen=True)
class Table:
    """Rows of cumulative frequencies summing to 2**PRECISION, each row one distribution.

    A value v under row r is the table symbol ``v >> lows[r]`` and then ``lows[r]`` uniform low
    bits; a symbol at the escape column (-1: none) is followed by its excess past it, in
    exponential-Golomb code of order ``orders[r]``. ``cum``: (rows, symbols + 1) int32;
    ``guess``: (rows, 256) the first symbol whose interval reaches each 2**-8 of the range (where
    the decoder's search starts); ``lengths``: (rows, symbols) bits of each symbol."""

    cum: np.ndarray
    guess: np.ndarray
    lengths: np.ndarray
    escape: int
    orders: np.ndarray
    lows: np.ndarray

    def bits(self, values: np.ndarray, rows: np.ndarray) -> float:
        """Code length of ``values`` under ``rows``, to the bit of what :class:`Encoder` writes
        (less the stream's two words of final state and its rounding to whole words)."""
        rows = np.asarray(rows, np.int64)
        lows = self.lows[rows]
        symbols = np.asarray(values, np.int64) >> lows
        total = float(lows.sum())
        if self.escape >= 0:
            escaped = symbols >= self.escape
            if escaped.any():
                k = self.orders[rows[escaped]]
                q = ((symbols[escaped] - self.escape) >> k) + 1
                total += float((2 * _bit_length(q) - 1 + k).sum())
                symbols = np.minimum(symbols, self.escape)
        return total + float(self.lengths[rows, symbols].sum())


def table(
    weights: np.ndarray, escape: int = -1, orders: np.ndarray | None = None, lows: np.ndarray | None = None
) -> Table:
    """A :class:`Table` of (rows, symbols) positive integer ``weights`` (at most 256 symbols): each
    frequency is at least 1 and the rounding's remainder goes to the row's most frequent symbol.
    ``orders`` and ``lows`` (per row; zeros where not given): see :class:`Table`."""
    w = np.asarray(weights, np.int64)
    if w.ndim != 2 or w.min() < 1 or w.shape[1] > 256 or w.max() >= 1 << 30:
        raise ValueError("table weights must be a 2-D array of positive integers below 2**30, at most 256 columns")
    free = _TOTAL - w.shape[1]
    freq = w * free // w.sum(axis=1, keepdims=True) + 1
    freq[np.arange(len(w)), freq.argmax(axis=1)] += _TOTAL - freq.sum(axis=1)
    cum = np.zeros((len(w), w.shape[1] + 1), np.int32)
    cum[:, 1:] = np.cumsum(freq, axis=1)
    starts = np.arange(256, dtype=np.int64) << (PRECISION - 8)
    guess = np.stack([np.searchsorted(row, starts, side="right") - 1 for row in cum]).astype(np.uint8)
    zeros = np.zeros(len(w), np.int64)
    orders = zeros if orders is None else np.asarray(orders, np.int64)
    lows = zeros if lows is None else np.asarray(lows, np.int64)
    if orders.shape != zeros.shape or lows.shape != zeros.shape or lows.min() < 0 or lows.max() > PRECISION:
        raise ValueError(f"orders and lows must give each row one value, lows at most {PRECISION} bits")
    return Table(cum, guess, PRECISION - np.log2(freq), escape, orders, lows)


def fold(values: np.ndarray, edge: int, k: np.ndarray | int = 0) -> np.ndarray:
    """Signed ``values`` as the non-negative values of a table over [-edge, edge] and an escape
    (column 2 edge + 1): ``hi = values >> k`` at column hi + edge, or past +-edge the escape's
    excess 2 (|hi| - edge - 1) + (hi < 0); then the k low bits (a row's ``lows``)."""
    values = np.asarray(values, np.int64)
    return _folded(values.reshape(-1), edge, _each(k, values.shape)).reshape(values.shape)


def unfold(values: np.ndarray, edge: int, k: np.ndarray | int = 0) -> np.ndarray:
    """Inverse of :func:`fold`."""
    values = np.asarray(values, np.int64)
    return _unfolded(values.reshape(-1), edge, _each(k, values.shape)).reshape(values.shape)


def _each(k: np.ndarray | int, shape: tuple[int, ...]) -> np.ndarray:
    """``k`` for every value, flat."""
    return np.ascontiguousarray(np.broadcast_to(np.asarray(k, np.int64), shape)).reshape(-1)


@numba.njit(nogil=True, cache=True)
def _folded(values: np.ndarray, edge: int, k: np.ndarray) -> np.ndarray:
    out = np.empty_like(values)
    for i in range(len(values)):
        hi = values[i] >> k[i]
        magnitude = abs(hi)
        symbol = 2 * edge + 1 + 2 * (magnitude - edge - 1) + (hi < 0) if magnitude > edge else hi + edge
        out[i] = (symbol << k[i]) | (values[i] - (hi << k[i]))
    return out


@numba.njit(nogil=True, cache=True)
def _unfolded(values: np.ndarray, edge: int, k: np.ndarray) -> np.ndarray:
    out = np.empty_like(values)
    for i in range(len(values)):
        symbol = values[i] >> k[i]
        excess = symbol - (2 * edge + 1)
        hi = symbol - edge if excess < 0 else (edge + 1 + (excess >> 1)) * (1 - 2 * (excess & 1))
        out[i] = (hi << k[i]) + (values[i] - (symbol << k[i]))
    return out


def _bit_length(q: np.ndarray) -> np.ndarray:
    """Bits of positive integers below 2**53 (frexp's exponent: exact, where log2 may round up)."""
    return np.frexp(np.asarray(q, np.float64))[1].astype(np.int64)


class Encoder:
    """Pushes runs of symbols in the reverse of the order a :class:`Decoder` pops them."""

    def __init__(self) -> None:
        self._state = np.array([_LOW], np.int64)
        self._words: list[np.ndarray] = []

    def push(self, values: np.ndarray, rows: np.ndarray, codes: Table) -> None:
        """Code ``values`` (non-negative) under ``codes``' ``rows`` (see :class:`Table`), so that a
        decoder's :meth:`Decoder.pop` of the same rows returns them in order."""
        values = np.ascontiguousarray(values, np.int64)
        rows = np.ascontiguousarray(rows, np.int64)
        if not len(values):
            return
        out = np.empty(2 * len(values) + _WORDS_PER_ESCAPE, np.uint32)
        n = _encode(self._state, out, values, rows, codes.cum, codes.escape, codes.orders, codes.lows)
        if n == _NO_ROOM:  # more than one escape: room for each
            escaped = np.count_nonzero(values >> codes.lows[rows] >= codes.escape)
            out = np.empty(2 * len(values) + (escaped + 1) * _WORDS_PER_ESCAPE, np.uint32)
            n = _encode(self._state, out, values, rows, codes.cum, codes.escape, codes.orders, codes.lows)
        if n == _OUTSIDE:
            raise ValueError("a value lies outside its table")
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
        error = _decode(
            self._words, self._cursor, rows, codes.cum, codes.guess, codes.escape, codes.orders, codes.lows, out
        )
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
    q = x // freq
    return (q << PRECISION) + (x - q * freq) + start, n


@numba.njit(**_JIT)
def _encode(state, out, values, rows, cum, escape, orders, lows):
    """Push ``values`` last to first; returns the number of words emitted into ``out``, or
    _OUTSIDE (a value is not in its table) or _NO_ROOM (``out`` is too short), the state then
    left as it was."""
    x, n, width = state[0], 0, cum.shape[1] - 1
    for i in range(len(values) - 1, -1, -1):
        v, r = values[i], rows[i]
        if n + 2 + _WORDS_PER_ESCAPE > len(out):
            return _NO_ROOM
        k = lows[r]
        if v < 0 or (escape < 0 and v >> k >= width):
            return _OUTSIDE
        if k:  # read last: the low bits, in one symbol
            x, n = _put(x, out, n, (v & ((1 << k) - 1)) << (PRECISION - k), 1 << (PRECISION - k))
        s = v >> k
        if escape >= 0 and s >= escape:
            excess, order = s - escape, orders[r]
            for b in range(order):  # the excess's low bits, read after q, highest first
                x, n = _put(x, out, n, ((excess >> b) & 1) * _HALF, _HALF)
            q = (excess >> order) + 1
            length = 0
            while q >> length:
                length += 1
            for b in range(length):  # q's bits, read after the prefix, highest (always 1) first
                x, n = _put(x, out, n, ((q >> b) & 1) * _HALF, _HALF)
            for _ in range(length - 1):  # the prefix: a zero for each bit of q past the first
                x, n = _put(x, out, n, 0, _HALF)
            s = escape
        x, n = _put(x, out, n, cum[r, s], cum[r, s + 1] - cum[r, s])
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
def _decode(words, cursor, rows, cum, guess, escape, orders, lows, out):
    """Pop one value per row into ``out``; returns an error code (0: none)."""
    x, pos = cursor[0], cursor[1]
    for i in range(len(rows)):
        r = rows[i]
        slot = x & _MASK
        s = np.int64(guess[r, slot >> (PRECISION - 8)])
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
        k = lows[r]
        if k:
            slot = x & _MASK
            low = slot >> (PRECISION - k)
            x = (x >> PRECISION << (PRECISION - k)) + slot - (low << (PRECISION - k))
            if x < _LOW:
                if pos >= len(words):
                    return _EXHAUSTED
                x = (x << 32) | np.int64(words[pos])
                pos += 1
            s = (s << k) | low
        out[i] = s
    cursor[0], cursor[1] = x, pos
    return _OK
