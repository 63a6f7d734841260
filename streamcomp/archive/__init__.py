"""Archive every volume under a prefix: :mod:`.discover` finds them, :mod:`.run` compresses,
verifies and records each."""

from streamcomp.archive.discover import MANIFEST, ArchiveError, Skipped, Volume, discover, preflight
from streamcomp.archive.run import ArchiveReport, archive, read_manifest

__all__ = ["MANIFEST", "ArchiveError", "ArchiveReport", "Skipped", "Volume", "archive", "discover", "preflight",
           "read_manifest"]
