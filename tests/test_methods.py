"""The method plug-in interface: registration through entry points, typed parameters, and the
contract a new method must meet (decode is required; decode_at is optional and says so)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from streamcomp.errors import InputError
from streamcomp.methods import DEFAULT_METHOD, Method, Params, Target, build_method, method_class, method_names


def test_every_method_is_registered_by_entry_point_with_a_unique_id():
    names = method_names()
    assert names == ["nerf", "planes", "sci", "siren", "sr", "unicompress", "wavelet"] and DEFAULT_METHOD in names
    classes = [method_class(n) for n in names]
    assert [c.name for c in classes] == names
    assert len({c.method_id for c in classes}) == len(names)
    assert method_class("siren") is method_class("siren")  # loaded once
    with pytest.raises(InputError, match="unknown method 'jpeg9'; choose one of: nerf, planes"):
        method_class("jpeg9")


def test_build_method_checks_the_volumes_axes():
    assert build_method("planes", {"steps": 3}, 4).params.steps == 3
    assert build_method("siren", None, 3).params == method_class("siren").Params()
    with pytest.raises(InputError, match="handles .* volumes, this one has 4 axes"):
        build_method("sci", {}, 4)


def test_parameters_are_a_typed_frozen_dataclass():
    method = method_class("siren")(steps=40, w0=15)
    p = method.params
    assert isinstance(p, Params) and type(p) is method_class("siren").Params
    assert p.steps == 40 and p.w0 == 15.0 and type(p.w0) is float  # an int where a float goes is taken
    assert p.as_dict()["steps"] == 40 and "steps" not in p.stored() and p.stored()["w0"] == 15.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.steps = 1
    encode_only = {f.name for f in dataclasses.fields(p) if f.metadata.get("encode_only")}
    assert "steps" in encode_only and "w0" not in encode_only


@pytest.mark.parametrize(
    "params, message",
    [
        ({"depth": 3}, r"has no parameter\(s\) \['depth'\]"),
        ({"steps": "10"}, "parameter 'steps' must be int"),
        ({"steps": True}, "parameter 'steps' must be int"),
        ({"steps": 1.5}, "parameter 'steps' must be int"),
        ({"w0": "fast"}, "parameter 'w0' must be float"),
    ],
)
def test_unknown_or_wrongly_typed_parameters_are_refused(params, message):
    with pytest.raises(InputError, match=message):
        method_class("siren")(**params)


class _Copy(Method):
    """A minimal plug-in: stores the block as float32 bytes, cannot evaluate at coordinates."""

    name = "copy"
    method_id = 250

    def encode(self, block, target):
        return [block.astype(np.float32).tobytes(), b""]

    def decode(self, sections, shape):
        return np.frombuffer(sections[0], np.float32).reshape(shape)


def test_a_method_without_decode_cannot_be_built():
    class NoDecode(Method):
        name = "nodecode"
        method_id = 251

        def encode(self, block, target):
            return [b"", b""]

    with pytest.raises(TypeError, match="abstract"):
        NoDecode()


def test_the_default_hooks_of_a_minimal_method():
    import torch

    m = _Copy()
    block = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 2, 2)
    sections = m.encode(block, Target(budget_bytes=100))
    assert np.array_equal(m.decode(sections, block.shape), block)
    assert not m.needs_fit() and m.fit_shared([block]) == [] and m.shared_state() == b""
    assert m.chunk_weight(block) is None and m.stored_params() == {}
    with pytest.raises(InputError, match="'copy' cannot evaluate a chunk at arbitrary coordinates"):
        m.decode_at(sections, block.shape, torch.zeros(1, 3))


def test_a_target_is_a_budget_or_an_error_bound():
    with pytest.raises(InputError, match="exactly one"):
        Target()
    with pytest.raises(InputError, match="exactly one"):
        Target(budget_bytes=10, max_mse=0.1)


@pytest.mark.parametrize("name", ["siren", "sci"])
def test_sine_networks_are_sized_for_a_fine_quantizer(ct, name):
    """At equal bytes, a width sized for 8 bits per weight (the default) decodes a real CT chunk
    clearly better than one sized for 6, whose quantizer is too coarse for a sine network."""
    from streamcomp.format.chunk import decode_chunk, encode_chunk
    from streamcomp.metrics import psnr

    budget = ct.nbytes // 16
    quality = {}
    for bits in (6.0, None):
        params = {"steps": 150} | ({} if bits is None else {"bits_per_param": bits})
        method = build_method(name, params, ct.ndim)
        data = encode_chunk(method, ct, budget_bytes=budget)
        assert len(data) <= budget
        quality[bits] = psnr(ct, decode_chunk(method, data))
    assert method.params.bits_per_param == 8.0
    assert quality[None] > quality[6.0] + 1.0, quality
