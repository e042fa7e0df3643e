"""JAX: immutable arrays, float64 only behind its own switch, and whole training loops compiled."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import array_api_compat

from .base import Backend, import_namespace


def _load() -> ModuleType:
    # JAX's float64 stays the user's switch (JAX_ENABLE_X64=1, jax.config, `with jax.enable_x64():`): it is
    # process-wide, and a library must not flip it. See _check_dtype.
    return import_namespace("jax", "jax.numpy", "pip install 'jax[cpu]' (or 'xbackprop[jax-gpu]' on an NVIDIA GPU)")


def _parse_device(xp: ModuleType, device: str) -> Any:
    import jax

    platform, _, index = device.partition(":")
    return jax.devices(platform)[int(index or 0)]


def _check_dtype(xp: ModuleType, dtype: Any) -> None:
    import jax

    if dtype == xp.float64 and not jax.config.jax_enable_x64:
        raise ValueError("JAX computes in float64 only with its x64 switch on: run with JAX_ENABLE_X64=1, call "
                         "jax.config.update('jax_enable_x64', True) first, or work inside `with jax.enable_x64():`")


def _compile(fn: Any) -> Any:
    import jax

    return jax.jit(fn)


def _compile_steps(step: Any) -> Any:
    """K steps as one ``jax.lax.scan`` inside one ``jax.jit``: one dispatch for K steps; on an accelerator the
    parameter and state buffers are donated and updated in place."""
    import jax

    def run_block(params: Any, state: Any, x_all: Any, t_all: Any, indices: Any) -> Any:
        def body(carry: Any, index: Any) -> Any:
            params, state, loss = step(*carry, x_all, t_all, index)
            return (params, state), loss

        (params, state), losses = jax.lax.scan(body, (params, state), indices)
        return params, state, losses

    on_cpu = all(d.platform == "cpu" for d in jax.devices())
    return jax.jit(run_block, donate_argnums=() if on_cpu else (0, 1))  # the CPU backend cannot donate


JAX = Backend(
    name="jax",
    load=_load,
    owns=array_api_compat.is_jax_namespace,
    parse_device=_parse_device,
    check_dtype=_check_dtype,
    compile=_compile,
    compile_steps=_compile_steps,
)
