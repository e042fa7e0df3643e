"""The book's ``common/util.py`` for chapter 7: ``im2col`` and ``col2im``, in the Array API standard only.

A convolution becomes one matrix product once every window of the input is a row: ``im2col``
pads the images (array-api-extra's ``pad``) and writes the ``filter_h * filter_w`` strided slices
of the padded images into place, with no loop over output pixels and no NumPy-only stride tricks.
``col2im`` is its adjoint, not its inverse: it adds each window's values back where they came
from, so a pixel covered by several windows receives their sum. The additions go slice by slice
(``filter_h * filter_w`` strided slices, each touching distinct pixels): never an integer-array
assignment, never a scatter with repeated indices, so every backend gives the same sums.
"""

from __future__ import annotations

from typing import Any

import array_api_extra as xpx
from array_api_compat import array_namespace, device

__all__ = ["im2col", "col2im", "conv_output_size", "windows"]


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


def im2col(input_data: Any, filter_h: int, filter_w: int, stride: int = 1, pad: int = 0) -> Any:
    """Every ``filter_h`` x ``filter_w`` window of ``input_data`` ``(N, C, H, W)`` as a row of
    ``(N * out_h * out_w, C * filter_h * filter_w)``, in the book's order (rows by image, then output row and
    column; columns by channel, then filter row and column). Same dtype and device as the input."""
    xp = array_namespace(input_data)
    n, c, h, w = input_data.shape
    out_h, out_w = conv_output_size(h, filter_h, stride, pad), conv_output_size(w, filter_w, stride, pad)
    img = xpx.pad(input_data, ((0, 0), (0, 0), (pad, pad), (pad, pad)), xp=xp) if pad else input_data
    # each window position written into its place (a stack of them would be one array per position: a captured
    # CUDA graph cannot take a stack of more than eight)
    col = xp.empty((n, c, filter_h * filter_w, out_h, out_w), dtype=input_data.dtype, device=device(input_data))
    for k, (rows, columns) in enumerate(windows(filter_h, filter_w, stride, out_h, out_w)):
        col = xpx.at(col, (slice(None), slice(None), k, ...)).set(img[:, :, rows, columns], copy=None, xp=xp)
    col = xp.reshape(col, (n, c, filter_h, filter_w, out_h, out_w))
    return xp.reshape(xp.permute_dims(col, (0, 4, 5, 1, 2, 3)), (n * out_h * out_w, c * filter_h * filter_w))


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
    img = xp.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=col.dtype, device=device(col))
    positions = windows(filter_h, filter_w, stride, out_h, out_w)
    for k, (rows, columns) in enumerate(positions):  # each slice touches distinct pixels: no repeated index
        img = xpx.at(img, (slice(None), slice(None), rows, columns)).add(
            parts[:, :, k // filter_w, k % filter_w, :, :], copy=None, xp=xp)
    return img[:, :, pad : pad + h, pad : pad + w]

