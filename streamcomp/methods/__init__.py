"""Compression methods behind one plug-in interface; importing this registers them all."""

from streamcomp.methods import nerf, planes, sci, siren, unicompress  # noqa: F401 - registration side effect
from streamcomp.methods.base import METHODS, FitTargets, Method, Target, method_class, method_class_by_id

DEFAULT_METHOD = "unicompress"

__all__ = ["DEFAULT_METHOD", "METHODS", "FitTargets", "Method", "Target", "method_class", "method_class_by_id"]
