"""A replica's cap on GPU memory, for GPUs shared between replicas.

Ray (like Kubernetes' time-slicing) only counts GPU fractions: ``num_gpus=0.5`` gives a replica a GPU in
``CUDA_VISIBLE_DEVICES`` and nothing stops it from filling that GPU's memory. The engine therefore puts the
replica's share in ``THRIFTY_GPU_MEMORY_FRACTION``, and the replica process applies it before it loads the
predictor, through PyTorch's per-process memory fraction (an allocation past it raises
``torch.cuda.OutOfMemoryError`` in that replica, not in its neighbours). Frameworks other than PyTorch are
not capped (TensorFlow's memory limit or MPS's ``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`` would be the next ones).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping

GPU_MEMORY_FRACTION_ENV = "THRIFTY_GPU_MEMORY_FRACTION"


def gpu_memory_fraction(gpu: float, gpu_mem_bytes: int | None = None, node_gpu_mem_bytes: int = 0) -> float | None:
    """The share of one GPU's memory a replica may use; None when it holds no GPU fraction.

    ``gpu_mem`` (per replica) over the GPU's memory when both are known, else its GPU fraction. Whole GPUs
    (``gpu >= 1``) are the replica's alone: no cap.
    """
    if gpu <= 0 or gpu >= 1:
        return None
    if gpu_mem_bytes is not None and node_gpu_mem_bytes > 0:
        return min(1.0, gpu_mem_bytes / node_gpu_mem_bytes)
    return gpu


def requested_fraction(environ: Mapping[str, str]) -> float | None:
    """The fraction in the environment, checked: (0, 1]. Raises ValueError for anything else."""
    raw = environ.get(GPU_MEMORY_FRACTION_ENV, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{GPU_MEMORY_FRACTION_ENV}={raw!r} is not a number in (0, 1]") from None
    if not 0 < value <= 1:
        raise ValueError(f"{GPU_MEMORY_FRACTION_ENV}={raw!r} is not in (0, 1]")
    return value


def apply_gpu_memory_fraction(environ: Mapping[str, str] = os.environ) -> float | None:
    """Cap every visible GPU at the replica's fraction through PyTorch; the fraction applied, or None.

    Does nothing (and imports nothing) without the variable; nothing either where PyTorch is not installed
    or sees no GPU. Call it before the predictor is imported: PyTorch applies the cap to later allocations.
    """
    fraction = requested_fraction(environ)
    if fraction is None or importlib.util.find_spec("torch") is None:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    for device in range(torch.cuda.device_count()):
        torch.cuda.set_per_process_memory_fraction(fraction, device)
    return fraction
