"""Compression methods behind one plug-in interface; importing this registers them all."""

from streamcomp.methods import nerf, planes, sci, siren  # noqa: F401 - registration side effect
from streamcomp.methods.base import METHODS, Method, Target, method_class, method_class_by_id

__all__ = ["METHODS", "Method", "Target", "method_class", "method_class_by_id"]
