"""The book's ``common/util.py`` for chapter 7: ``im2col`` and ``col2im``, in the Array API standard only.

A convolution becomes one matrix product once every window of the input is a row: ``im2col``
pads the images (array-api-extra's ``pad``) and writes the ``filter_h * filter_w`` strided slices
of the padded images into place, with no loop over output pixels and no NumPy-only stride tricks.
``col2im`` is its adjoint, not its inverse: it adds each window's values back where they came
from, so a pixel covered by several windows receives their sum. The additions go slice by slice
(``filter_h * filter_w`` strided slices, each touching distinct pixels): never an integer-array
assignment, never a scatter with repeated indices, so every backend gives the same sums.

Max pooling uses the same windows: :func:`window_slices` gives each window position's view,
:func:`first_maxima` tells which position holds each window's first maximum, and
:func:`windows_added_back` (the adjoint of ``window_slices``, which ``col2im`` also uses) adds the
gradient's shares back.
"""

from __future__ import annotations

from typing import Any

import array_api_extra as xpx
from array_api_compat import array_namespace, device

__all__ = ["im2col", "col2im", "conv_output_size", "windows", "window_slices", "windows_added_back", "first_maxima"]


def conv_output_size(size: int, filter_size: int, stride: int = 1, pad: int = 0) -> int:
    """``(size + 2 pad - filter_size) // stride + 1``, or ``ValueError`` where no window fits."""
    if stride < 1 or pad < 0 or filter_size < 1:
        raise ValueError(f"stride must be at least 1, pad at least 0 and the filter at least 1, got stride {stride}, "
                         f"pad {pad}, filter {filter_size}")
    if size + 2 * pad < filter_size:
        raise ValueError(f"a filter of {filter_size} does not fit an input of {size} padded by {pad}")
    return (size + 2 * pad - filter_size) // stride + 1


def windows(filter_h: int, filter_w: int, stride: int, out_h: int, out_w: int) -> list[tuple[slice, slice]]:
    """The strided slices of the padded image that filter position (y, x) sees, row-major over (y, x)."""
    return [(slice(y, y + stride * (out_h - 1) + 1, stride), slice(x, x + stride * (out_w - 1) + 1, stride))
            for y in range(filter_h) for x in range(filter_w)]


def window_slices(x: Any, filter_h: int, filter_w: int, stride: int = 1, pad: int = 0) -> list[Any]:
    """For each position ``k`` in a window (row by row), that position of every window of ``x`` ``(N, C, H, W)``
    padded by ``pad`` zeros: views ``(N, C, out_h, out_w)``, one per position."""
    xp = array_namespace(x)
    out_h = conv_output_size(x.shape[2], filter_h, stride, pad)
    out_w = conv_output_size(x.shape[3], filter_w, stride, pad)
    padded = xpx.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), xp=xp) if pad else x
    return [padded[:, :, rows, columns] for rows, columns in windows(filter_h, filter_w, stride, out_h, out_w)]


def first_maxima(pieces: list[Any], maximum: Any) -> list[Any]:
    """Where each of ``pieces`` (the window positions of :func:`window_slices`) holds its window's ``maximum``
    first: bool arrays shaped like ``maximum``, exactly one true per window. Where a window holds a NaN
    (``maximum`` NaN), its first position. Counted with masks, not ``where()``, which mispredicts a branch an
    element on NumPy."""
    unclaimed, won = None, []
    for piece in pieces:
        reaches = ~(piece < maximum)  # equal to the maximum (no piece is above it), or the maximum is NaN
        won.append(reaches if unclaimed is None else reaches & unclaimed)
        unclaimed = ~reaches if unclaimed is None else unclaimed & ~reaches
    return won


def im2col(input_data: Any, filter_h: int, filter_w: int, stride: int = 1, pad: int = 0) -> Any:
    """Every ``filter_h`` x ``filter_w`` window of ``input_data`` ``(N, C, H, W)`` as a row of
    ``(N * out_h * out_w, C * filter_h * filter_w)``, in the book's order (rows by image, then output row and
    column; columns by channel, then filter row and column). Same dtype and device as the input. The rows are
    the transpose of a ``(C * filter_h * filter_w, N * out_h * out_w)`` array that is contiguous where the backend
    has layouts: ``.T`` gives it back without a copy, and a matrix product takes either as they are."""
    xp = array_namespace(input_data)
    n, c, h, w = input_data.shape
    out_h, out_w = conv_output_size(h, filter_h, stride, pad), conv_output_size(w, filter_w, stride, pad)
    img = xpx.pad(input_data, ((0, 0), (0, 0), (pad, pad), (pad, pad)), xp=xp) if pad else input_data
    # each window position written into its place (a stack of them would be one array per position: a captured
    # CUDA graph cannot take a stack of more than eight), images inside channels and positions, so that the
    # book's rows are a transposed view: no copy, and the product with them needs none either
    col = xp.empty((c, filter_h * filter_w, n, out_h, out_w), dtype=input_data.dtype, device=device(input_data))
    for k, (rows, columns) in enumerate(windows(filter_h, filter_w, stride, out_h, out_w)):
        col = xpx.at(col, (slice(None), k, ...)).set(xp.permute_dims(img[:, :, rows, columns], (1, 0, 2, 3)),
                                                      copy=None, xp=xp)
    return xp.reshape(col, (c * filter_h * filter_w, n * out_h * out_w)).T


def col2im(col: Any, input_shape: tuple[int, int, int, int], filter_h: int, filter_w: int, stride: int = 1,
           pad: int = 0) -> Any:
    """The adjoint of :func:`im2col`: rows ``(N * out_h * out_w, C * filter_h * filter_w)`` added back into images
    ``input_shape`` ``(N, C, H, W)``, each value where its window took it from, so that
    ``sum(im2col(x) * y) == sum(x * col2im(y))`` for every ``x`` and ``y``. (Not an inverse: a pixel that
    several windows cover receives the sum of their values.)"""
    xp = array_namespace(col)
    n, c, h, w = (int(size) for size in input_shape)
    out_h, out_w = conv_output_size(h, filter_h, stride, pad), conv_output_size(w, filter_w, stride, pad)
    parts = xp.permute_dims(xp.reshape(col, (n, out_h, out_w, c, filter_h, filter_w)), (0, 3, 4, 5, 1, 2))
    pieces = [parts[:, :, k // filter_w, k % filter_w, :, :] for k in range(filter_h * filter_w)]
    return windows_added_back(pieces, (n, c, h, w), filter_h, filter_w, stride, pad)


def windows_added_back(pieces: list[Any], input_shape: tuple[int, int, int, int], filter_h: int, filter_w: int,
                       stride: int = 1, pad: int = 0, *, like: Any = None) -> Any:
    """The adjoint of :func:`window_slices`: images ``input_shape`` ``(N, C, H, W)`` in which each pixel is the sum
    of the values that ``pieces`` (one ``(N, C, out_h, out_w)`` array per window position) hold for it. ``like``,
    an array of that shape, lends its memory layout where nothing is padded. Piece by piece over strided slices,
    each touching distinct pixels: never an integer-array assignment, never a scatter with repeated indices.
    Where the windows tile the images exactly, each piece is written rather than added."""
    xp = array_namespace(pieces[0])
    n, c, h, w = input_shape
    out_h, out_w = conv_output_size(h, filter_h, stride, pad), conv_output_size(w, filter_w, stride, pad)
    tiled = not pad and filter_h == filter_w == stride and h % stride == 0 and w % stride == 0
    if like is not None and not pad:
        img = xp.empty_like(like) if tiled else xp.zeros_like(like)
    else:
        img = xp.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=pieces[0].dtype, device=device(pieces[0]))
    for piece, (rows, columns) in zip(pieces, windows(filter_h, filter_w, stride, out_h, out_w)):
        at = xpx.at(img, (slice(None), slice(None), rows, columns))
        img = at.set(piece, copy=None, xp=xp) if tiled else at.add(piece, copy=None, xp=xp)
    return img[:, :, pad : pad + h, pad : pad + w] if pad else img

