"""The declarations of the four built-in aggregation backends (registered when :mod:`e4net.backends` is imported).

| backend     | devices                 | dtypes                  | bias  | auto priority        |
|-------------|-------------------------|-------------------------|-------|----------------------|
| reference   | any                     | any                     | added | never (the baseline) |
| shift       | any                     | any                     | added | 0 on cpu and cuda    |
| numba       | cpu                     | float32, float64        | fused | 10 on cpu            |
| triton      | cuda (cpu: interpreter) | fp16, bf16, fp32, fp64  | added | 10 on cuda           |

numba needs the ``numba`` module, triton the ``triton`` module; neither is imported before its first aggregation.
Each also declares its aggregation on voxel grids (O, Oh; ``load_3d``) in its own module: ``reference`` and ``shift``
beside the 2-D one, ``numba_agg3d``, ``triton_agg3d``; the same devices, dtypes and priorities apply. numba also
fuses the kernel generator's last linear map into its 3-D aggregation (``load_generated_3d``). In inference it also generates the 2-D kernels inside its aggregation
(``load_generated``).
"""

from __future__ import annotations

import os

import torch

from .contract import Backend, lazy_function

__all__ = ["NUMBA", "REFERENCE", "SHIFT", "TRITON", "triton_interpreting"]


def triton_interpreting() -> bool:
    """Whether Triton runs its CPU interpreter (``TRITON_INTERPRET=1``; Triton reads it when the kernels are
    decorated, i.e. when :mod:`e4net.backends.triton_agg` is imported)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")


def _triton_runs_on(device_type: str) -> bool:
    return device_type == "cuda" or triton_interpreting()


REFERENCE = Backend(
    "reference",
    lazy_function(f"{__package__}.reference", "aggregate_reference"),
    load_3d=lazy_function(f"{__package__}.reference", "aggregate_reference_3d"),
)
SHIFT = Backend(
    "shift",
    lazy_function(f"{__package__}.shift", "aggregate_shift"),
    auto_priority={"cpu": 0, "cuda": 0},
    load_3d=lazy_function(f"{__package__}.shift", "aggregate_shift_3d"),
)
NUMBA = Backend(
    "numba",
    lazy_function(f"{__package__}.numba_agg", "aggregate_numba"),
    devices={"cpu"},
    dtypes={torch.float32, torch.float64},
    fuses_bias=True,
    auto_priority={"cpu": 10},
    requires=("numba",),
    load_3d=lazy_function(f"{__package__}.numba_agg3d", "aggregate_numba_3d"),
    load_generated=lazy_function(f"{__package__}.numba_agg", "aggregate_numba_generated"),
    load_generated_3d=lazy_function(f"{__package__}.numba_agg3d", "aggregate_generated_numba_3d"),
)
TRITON = Backend(
    "triton",
    lazy_function(f"{__package__}.triton_agg", "aggregate_triton"),
    devices={"cuda", "cpu"},
    dtypes={torch.float16, torch.bfloat16, torch.float32, torch.float64},
    auto_priority={"cuda": 10},
    requires=("triton",),
    runs_on=_triton_runs_on,
    recover_on={"cuda"},
    load_3d=lazy_function(f"{__package__}.triton_agg3d", "aggregate_triton_3d"),
)
