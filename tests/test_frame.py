import numpy as np
import pytest

from streamcomp.errors import ChunkFormatError
from streamcomp.format.frame import FORMAT_VERSION, MAGIC, Frame, pack, unpack


def sample_frame() -> bytes:
    frame = Frame(1, np.dtype("uint16"), (4, 8, 8), (3, 8, 5), -2.5, 700.0, 0, [b"arch", b"weights" * 9])
    return pack(frame)


def test_round_trip_keeps_every_field():
    f = unpack(sample_frame())
    assert (f.method_id, f.dtype, f.shape, f.valid) == (1, np.dtype("uint16"), (4, 8, 8), (3, 8, 5))
    assert (f.vmin, f.vmax, f.sections) == (-2.5, 700.0, [b"arch", b"weights" * 9])


@pytest.mark.parametrize("position", [0.3, 0.6, 0.95])
def test_flipped_byte_is_a_checksum_error(position):
    data = bytearray(sample_frame())
    i = int(len(data) * position)
    data[i] ^= 0x40
    with pytest.raises(ChunkFormatError, match="checksum|truncated|trailing|dtype"):
        unpack(bytes(data))


@pytest.mark.parametrize("keep", [0, 3, 20, -1])
def test_truncated_payload(keep):
    data = sample_frame()
    with pytest.raises(ChunkFormatError, match="truncated|not a streamcomp"):
        unpack(data[:keep])


def test_trailing_bytes():
    with pytest.raises(ChunkFormatError, match="trailing"):
        unpack(sample_frame() + b"\0")


def test_wrong_magic_is_foreign():
    data = b"\x28\xb5\x2f\xfd" + sample_frame()[4:]  # a zstd frame's magic
    with pytest.raises(ChunkFormatError, match="not a streamcomp chunk"):
        unpack(data)


def test_future_version_says_upgrade():
    data = bytearray(sample_frame())
    assert data[:4] == MAGIC
    data[4] = FORMAT_VERSION + 1
    with pytest.raises(ChunkFormatError, match="newer than this build.*upgrade"):
        unpack(bytes(data))
