"""Self-describing chunk framing.

Every stored chunk is ``header | sections``. The header names the method, the dtype, the chunk
shape, the region that was actually encoded (edge chunks encode only their valid part), the value
range and the length of each section, and ends with a CRC32 over header and sections. A decoder can
therefore reject truncated, corrupted or foreign bytes before it touches a single weight.

Layout (little endian)::

    magic "SCMP" | version u8 | method u8 | dtype u8 | flags u8 | ndim u8 | nsec u8
    | shape u32*ndim | valid u32*ndim | vmin f64 | vmax f64 | seclen u32*nsec | crc32 u32
    | section bytes ...
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from streamcomp.errors import ChunkFormatError, InputError

MAGIC = b"SCMP"
# 2: error-bounded chunks (FLAG_BOUNDED); 3: the wavelet method, whose residual sections may be
# coded under the array's learned context model; 4: wavelet sections that ask for the array's
# post-filter (whose weights its shared state then carries); 5: that filter's weights in int8;
# 6: a version 2 context model, whose sections code magnitudes and then signs under its sign model;
# 7: error-bounded arrays whose levels may be coded under a context model their configuration carries;
# 8: exact-coded sections that may use the 9/7-M integer transform; 9: residual sections whose
# in-plane lifting passes are steered along edges (direction grids in the section); 10: sections
# coded under a version 3 context model, by the compiled coder (streamcomp.coding.rans). Older
# chunks and states decode unchanged.
FORMAT_VERSION = 10

FLAG_CONSTANT = 1
FLAG_NONFINITE = 2
FLAG_BOUNDED = 4  # coded in data units within an absolute error bound (streamcomp.format.bounded)
_FLAGS = FLAG_CONSTANT | FLAG_NONFINITE | FLAG_BOUNDED

DTYPE_CODES: dict[str, int] = {
    "uint8": 1,
    "uint16": 2,
    "int16": 3,
    "float32": 4,
    "int8": 5,
    "uint32": 6,
    "int32": 7,
    "float64": 8,
}
CODE_DTYPES = {v: np.dtype(k) for k, v in DTYPE_CODES.items()}
SUPPORTED_DTYPES = tuple(DTYPE_CODES)


def check_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype, if a frame can carry it; otherwise an :class:`InputError` naming those it can."""
    dtype = np.dtype(dtype)
    if dtype.name not in SUPPORTED_DTYPES:
        raise InputError(f"dtype {dtype} is not supported; use one of {', '.join(SUPPORTED_DTYPES)}")
    return dtype

_FIXED = struct.Struct("<4sBBBBBB")
_RANGE = struct.Struct("<dd")
_CRC = struct.Struct("<I")


@dataclass
class Frame:
    """Parsed chunk: what the method needs to rebuild the voxels."""

    method_id: int
    dtype: np.dtype
    shape: tuple[int, ...]
    valid: tuple[int, ...]
    vmin: float
    vmax: float
    flags: int = 0
    sections: list[bytes] = field(default_factory=list)

    @property
    def constant(self) -> bool:
        return bool(self.flags & FLAG_CONSTANT)

    @property
    def has_nonfinite(self) -> bool:
        return bool(self.flags & FLAG_NONFINITE)

    @property
    def bounded(self) -> bool:
        return bool(self.flags & FLAG_BOUNDED)


def header_size(ndim: int, nsections: int) -> int:
    """Bytes taken by the header of a chunk with ``ndim`` axes and ``nsections`` sections."""
    return _FIXED.size + 8 * ndim + _RANGE.size + 4 * nsections + _CRC.size


def pack(frame: Frame) -> bytes:
    """Serialize a frame, computing section lengths and the CRC32."""
    if frame.dtype.name not in DTYPE_CODES:
        raise ChunkFormatError(f"dtype {frame.dtype} cannot be framed")
    ndim = len(frame.shape)
    head = _FIXED.pack(
        MAGIC,
        FORMAT_VERSION,
        frame.method_id,
        DTYPE_CODES[frame.dtype.name],
        frame.flags,
        ndim,
        len(frame.sections),
    )
    head += struct.pack(f"<{ndim}I{ndim}I", *frame.shape, *frame.valid)
    head += _RANGE.pack(frame.vmin, frame.vmax)
    head += struct.pack(f"<{len(frame.sections)}I", *(len(s) for s in frame.sections))
    crc = zlib.crc32(head)
    for s in frame.sections:
        crc = zlib.crc32(s, crc)
    return b"".join([head, _CRC.pack(crc), *frame.sections])


def unpack(data: bytes | bytearray | memoryview) -> Frame:
    """Parse and verify chunk bytes; raise :class:`ChunkFormatError` saying what is wrong."""
    buf = memoryview(data).cast("B")
    if len(buf) < _FIXED.size:
        raise ChunkFormatError(
            f"chunk is truncated: {len(buf)} bytes, shorter than the {_FIXED.size}-byte header"
        )
    magic, version, method_id, dtype_code, flags, ndim, nsec = _FIXED.unpack_from(buf, 0)
    if magic != MAGIC:
        raise ChunkFormatError(
            f"not a streamcomp chunk (magic {bytes(magic)!r}, expected {MAGIC!r}): "
            "the array's codec and its chunk bytes do not match"
        )
    if version > FORMAT_VERSION:
        raise ChunkFormatError(
            f"chunk format version {version} is newer than this build reads "
            f"(up to {FORMAT_VERSION}): upgrade streamcomp to read this array"
        )
    if version < 1:
        raise ChunkFormatError(f"invalid chunk format version {version}")
    if flags & ~_FLAGS or (version < 2 and flags & FLAG_BOUNDED):
        raise ChunkFormatError(f"chunk header has unknown flags {flags:#04x}")
    if dtype_code not in CODE_DTYPES:
        raise ChunkFormatError(f"chunk header names unknown dtype code {dtype_code}")
    need = header_size(ndim, nsec)
    if len(buf) < need:
        raise ChunkFormatError(f"chunk is truncated: {len(buf)} bytes, header alone needs {need}")
    off = _FIXED.size
    dims = struct.unpack_from(f"<{2 * ndim}I", buf, off)
    off += 8 * ndim
    vmin, vmax = _RANGE.unpack_from(buf, off)
    off += _RANGE.size
    lengths = struct.unpack_from(f"<{nsec}I", buf, off)
    off += 4 * nsec
    (crc_stored,) = _CRC.unpack_from(buf, off)
    body_start = off + _CRC.size
    total = body_start + sum(lengths)
    if len(buf) < total:
        raise ChunkFormatError(f"chunk is truncated: {len(buf)} bytes of {total}")
    if len(buf) > total:
        raise ChunkFormatError(f"chunk has {len(buf) - total} unexpected trailing bytes")
    crc = zlib.crc32(buf[:off])
    crc = zlib.crc32(buf[body_start:total], crc)
    if crc != crc_stored:
        raise ChunkFormatError(
            f"chunk checksum mismatch (CRC32 {crc:08x}, stored {crc_stored:08x}): "
            "the bytes were corrupted in storage or transfer"
        )
    sections = []
    pos = body_start
    for n in lengths:
        sections.append(bytes(buf[pos : pos + n]))
        pos += n
    return Frame(
        method_id=method_id,
        dtype=CODE_DTYPES[dtype_code],
        shape=tuple(dims[:ndim]),
        valid=tuple(dims[ndim:]),
        vmin=vmin,
        vmax=vmax,
        flags=flags,
        sections=sections,
    )
