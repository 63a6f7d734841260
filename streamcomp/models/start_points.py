"""Where a fit's starting points come from: the package's (``starts/``), a folder of them, or none.

A start is what a fit tunes instead of beginning from scratch (the post-filter's weights, the
context model's student); it is never what an array stores, so arrays stay self-contained.
:mod:`streamcomp.methods.starts` trains them; ``starts/starts.json`` says on what.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

STARTS = ("shipped", "none")


def check_start(where: str) -> None:
    """Raise ``ValueError`` unless ``where`` names starts: "shipped", "none" or an existing folder."""
    if where not in STARTS and not Path(where).is_dir():
        raise ValueError(
            f"start must be 'shipped', 'none' or a folder of starting points "
            f"(python -m streamcomp.methods.starts writes one), got {where!r}: no such folder"
        )


def read_start(where: str, name: str) -> bytes | None:
    """The bytes of the start file ``name`` in the package ("shipped") or the folder ``where``; None
    for "none" or when there is no such file (the fit then starts from scratch)."""
    check_start(where)
    if where == "none":
        return None
    path = resources.files("streamcomp.models") / "starts" / name if where == "shipped" else Path(where) / name
    return path.read_bytes() if path.is_file() else None
