"""Saving a matplotlib figure, the one way every picture of xbackprop is written (PNG, SVG or PDF by the
name's suffix, written beside the target and renamed into place)."""

from __future__ import annotations

import os
from typing import Any

from ..files import replace_atomically

#: Text kept as text in SVGs, and one hash salt, so a figure always gives the same file.
SVG_SETTINGS = {"svg.fonttype": "none", "svg.hashsalt": "xbackprop"}


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = 110, *, default_format: str = "png") -> None:
    """Write ``fig`` to ``path`` (PNG, SVG or PDF, from its suffix; PNG without one) through a temporary file
    beside it (``default_format`` for a name without a suffix). Text stays text in an SVG (searchable,
    testable), and the same figure gives the same SVG or PDF
    file (no date, a fixed hash salt); the settings are local to this save."""
    import matplotlib

    suffix = _format_of(path) or default_format
    metadata = {"Date": None} if suffix in ("svg", "pdf") else None
    with matplotlib.rc_context(SVG_SETTINGS), replace_atomically(path) as temporary:
        fig.savefig(temporary, dpi=dpi, format=suffix, metadata=metadata)


def svg_text(fig: Any) -> str:
    """``fig`` as SVG text (for a notebook's ``_repr_svg_``)."""
    import io

    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context(SVG_SETTINGS):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def png_bytes(fig: Any, dpi: int = 90) -> bytes:
    """``fig`` as PNG bytes (for a notebook's ``_repr_png_``)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _format_of(path: str | os.PathLike[str]) -> str:
    """The figure format named by ``path``'s suffix (the temporary name has none)."""
    suffix = os.path.splitext(os.fspath(path))[1].lstrip(".").lower()
    return suffix
