"""The options of one benchmark run (:class:`BenchConfig`): those every suite shares, then each suite's own.

This is the one home of the defaults (``e4net bench`` reads them from here). A new suite adds its options as fields
here and checks them in its :attr:`Suite.check <e4net.analysis.bench.suite.Suite.check>`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ...backends import available_backends
from .machine import default_bandwidth


@dataclass(frozen=True)
class BenchConfig:
    """What to run, where, how often. Sequences are tuples (the config is recorded in the results as JSON)."""

    suites: tuple[str, ...] = ("layers", "train")
    device: str = "cpu"
    backends: tuple[str, ...] = ("reference", "auto")  # 'reference' is the baseline of the backend ratios
    batch_size: int = 128
    repeats: int = 5
    # layers suite: E4 layer shapes (e4net, resnet) and the bandwidth of the aggregation's bound (None: looked up)
    layer_sets: tuple[str, ...] = ("e4net", "resnet")
    bandwidth_gbs: float | None = None
    # train suite: registered models, their batch size (None: batch_size)
    models: tuple[str, ...] = ("e4net", "p4m-e4r18")
    train_batch_size: int | None = None
    # instances suite: the Eq. 9 instances side by side at each kernel size
    instance_layers: tuple[str, ...] = ("GroupConv", "E4Conv", "GroupSelfAttention", "AttentiveGroupConv")
    instance_kernel_sizes: tuple[int, ...] = (3, 5, 7)
    instance_channels: int = 16
    instance_size: int = 28
    instance_batch_size: int = 8
    instance_group: str = "p4"
    # models suite: "E4:TWIN@BATCH" pairs, and a checkout of the authors' code for their E4-Net row (None: no row)
    model_pairs: tuple[str, ...] = ("e4net:p4cnn@128", "p4-e4r18:p4-r18@32", "p4m-e4r18:p4m-r18@32")
    authors_code: str | None = None
    # inference suite (CPU): registered models, batch sizes, runtimes (eval, exported, onnxruntime)
    inference_models: tuple[str, ...] = ("e4net", "p4cnn")
    inference_batch_sizes: tuple[int, ...] = (1, 128)
    inference_runtimes: tuple[str, ...] = ("eval", "exported", "onnxruntime")
    # volumes suite: the 3-D E4 layer vs GroupConv (O, C fields, k, S^3, batch), e4net3d vs gcnn3d train steps
    volume_group: str = "O"
    volume_fields: int = 8
    volume_kernel_size: int = 3
    volume_size: int = 16
    volume_batch_size: int = 4
    volume_models: tuple[str, ...] = ("e4net3d", "gcnn3d")  # the last one is the baseline
    volume_train_batch_size: int = 32

    def __post_init__(self) -> None:
        lists = (
            "suites",
            "backends",
            "layer_sets",
            "models",
            "instance_layers",
            "instance_kernel_sizes",
            "model_pairs",
        )
        for name in lists + ("inference_models", "inference_runtimes", "inference_batch_sizes", "volume_models"):
            value = getattr(self, name)  # a comma list is accepted for a sequence
            object.__setattr__(self, name, tuple(value.split(",") if isinstance(value, str) else value))

    def check(self) -> None:
        """The shared options (suites and their own options are checked by the registry and each suite)."""
        for b in self.backends:
            if b not in available_backends():
                raise ValueError(f"unknown backend {b!r}; available: {', '.join(available_backends())}")
        if self.repeats < 1 or self.batch_size < 1:
            raise ValueError("repeats and batch size must be positive")
        if self.train_batch_size is not None and self.train_batch_size < 1:
            raise ValueError(f"train batch size must be positive, got {self.train_batch_size}")
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but torch.cuda.is_available() is False")

    def resolved(self) -> BenchConfig:
        """The defaults that depend on other options or on the machine filled in (train batch, bandwidth)."""
        return replace(
            self,
            train_batch_size=self.train_batch_size or self.batch_size,
            bandwidth_gbs=self.bandwidth_gbs or default_bandwidth(torch.device(self.device)),
        )
