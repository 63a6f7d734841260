"""The streaming pipeline on Ray: driver phases (:mod:`.driver`), per-chunk worker (:mod:`.worker`),
executors (:mod:`.executors`), the encode phase on Ray Data (:mod:`.dataset`), manifest and resume
policy (:mod:`.manifest`)."""

from streamcomp.pipeline.config import RunConfig, error_bound, validate_engine, validate_target
from streamcomp.pipeline.driver import run
from streamcomp.pipeline.executors import PipelineError, start_ray
from streamcomp.pipeline.manifest import RunStats, read_manifest

__all__ = [
    "PipelineError", "RunConfig", "RunStats", "error_bound", "read_manifest", "run", "start_ray", "validate_engine",
    "validate_target",
]
