"""A replica's GPU memory share: computed from its compute, passed in the environment, checked."""

from __future__ import annotations

import pytest

from thrifty.engines.gpu_limits import (
    GPU_MEMORY_FRACTION_ENV,
    apply_gpu_memory_fraction,
    gpu_memory_fraction,
    requested_fraction,
)

GIB = 2**30


@pytest.mark.parametrize(
    ("gpu", "gpu_mem", "node_gpu_mem", "expected"),
    [
        (0, None, 16 * GIB, None),  # no GPU
        (1, None, 16 * GIB, None),  # a whole GPU is the replica's alone
        (2, None, 16 * GIB, None),
        (0.25, None, 16 * GIB, 0.25),  # its fraction of the GPU
        (0.5, None, 0, 0.5),  # GPU memory unknown: the fraction still
        (0.25, 8 * GIB, 16 * GIB, 0.5),  # gpu_mem wins where the GPU's memory is known
        (0.25, 32 * GIB, 16 * GIB, 1.0),  # never above the whole GPU
        (0.25, 8 * GIB, 0, 0.25),
    ],
)
def test_fraction_from_compute(gpu: float, gpu_mem: int | None, node_gpu_mem: int, expected: float | None) -> None:
    assert gpu_memory_fraction(gpu, gpu_mem, node_gpu_mem) == expected


def test_requested_fraction_is_checked() -> None:
    assert requested_fraction({}) is None
    assert requested_fraction({GPU_MEMORY_FRACTION_ENV: ""}) is None
    assert requested_fraction({GPU_MEMORY_FRACTION_ENV: "0.25"}) == 0.25
    assert requested_fraction({GPU_MEMORY_FRACTION_ENV: "1"}) == 1.0
    for bad in ("0", "-0.5", "1.5", "half", "nan"):
        with pytest.raises(ValueError, match=GPU_MEMORY_FRACTION_ENV):
            requested_fraction({GPU_MEMORY_FRACTION_ENV: bad})


def test_nothing_is_applied_without_the_variable() -> None:
    assert apply_gpu_memory_fraction({}) is None
