"""ONNX: an exported model (:func:`e4net.deploy.export`) as an ONNX file with a dynamic batch dimension, and
onnxruntime to run it.

``torch.onnx.export(..., dynamo=True)`` of the plain module: the E4 layers are 1x1 convolutions, a constant gather
and shifted slices (:class:`e4net.deploy.plain.E4Aggregation`), which every ONNX runtime executes. The input is
named ``images`` ``(batch, C, H, W)`` (3-D models: ``(batch, C, D, H, W)``), the output ``logits``. Needs the optional ``export`` extra
(``pip install "e4net[export]"``: onnx, onnxscript, onnxruntime); without it a clear :class:`~e4net.errors.E4NetError`.
"""

from __future__ import annotations

import importlib
import io
import logging
import warnings
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import E4NetError

__all__ = ["ONNX_PACKAGES", "require_onnx", "to_onnx", "onnx_session", "run_onnx", "INPUT_NAME", "OUTPUT_NAME"]

INPUT_NAME, OUTPUT_NAME = "images", "logits"
#: What the ``export`` extra installs (pyproject.toml), by import name.
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


def require_onnx() -> None:
    """Import the ONNX packages, or raise one E4NetError naming the missing ones and the extra that installs them."""
    missing = []
    for name in ONNX_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise E4NetError(
            f'ONNX export needs {", ".join(missing)} (not installed): pip install "e4net[export]" '
            f"(or pip install {' '.join(missing)})"
        )


def to_onnx(module: nn.Module, input_shape: tuple[int, ...], path: str | Path, *, batch: int = 2) -> Path:
    """Write ``module`` (a plain module from :func:`e4net.deploy.export`) to the ONNX file ``path``.

    ``input_shape``: one example ``(C, H, W)`` (or ``(C, D, H, W)``); the batch dimension is dynamic (the example batch ``batch`` must
    be at least 2 so the exporter does not specialise it). Returns the path.
    """
    require_onnx()
    path = Path(path)
    x = torch.randn(batch, *input_shape)
    batch_dim = torch.export.Dim("batch")
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):  # the exporter's progress lines
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(
            module.eval(),
            (x,),
            dynamo=True,
            dynamic_shapes=({0: batch_dim},),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            verbose=False,
        )
    if program is None:
        raise E4NetError("torch.onnx.export returned no program")
    program.save(str(path))
    return path


def onnx_session(path: str | Path, threads: int | None = None, spin: bool = True) -> Any:
    """An onnxruntime ``InferenceSession`` of the file ``path`` on the CPU (``threads`` intra-op threads).

    ``spin=False`` stops its idle threads from busy-waiting after each run: needed when other work shares the cores
    (a benchmark that interleaves runtimes: spinning threads slowed PyTorch's calls in between up to 100-fold here).
    """
    require_onnx()
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session: Any, x: torch.Tensor | np.ndarray) -> np.ndarray:
    """The logits of ``session`` for the batch ``x`` (float32)."""
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return session.run([OUTPUT_NAME], {INPUT_NAME: arr.astype(np.float32, copy=False)})[0]
