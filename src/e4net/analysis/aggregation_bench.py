"""Time and memory of the aggregation instances side by side: GroupConv (Eq. 5), E4Conv (Eq. 12), group
self-attention (Eq. 6) and the attentive group convolution, at several neighbourhood sizes.

Run ``python -m e4net.analysis.aggregation_bench --help``. For every layer and kernel size it reports the parameters,
the MACs of one example (:func:`e4net.count`), the median forward and forward+backward wall time, the memory of the
tensors autograd saves for the backward pass (input included) (deterministic, any device) and, on CUDA, the peak allocated memory of a
forward+backward. Ratios are against GroupConv at the same k, measured in the same run. Attention is quadratic in the
neighbourhood: every query meets all ``|N(e)|`` neighbours (and the attentive conv materialises every contribution).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..groups import resolve
from ..nn import E4Conv, GroupConv
from ..nn.attentive_conv import AttentiveGroupConv
from ..nn.self_attention import GroupSelfAttention
from .count import count

__all__ = ["BenchRow", "benchmark_aggregations", "markdown_table", "LAYERS"]

LAYERS: dict[str, Callable[[int, int, str], nn.Module]] = {
    "GroupConv": lambda c, k, g: GroupConv(c, c, k, g),
    "E4Conv": lambda c, k, g: E4Conv(c, c, k, g, reduction=2, slices=2),
    "GroupSelfAttention": lambda c, k, g: GroupSelfAttention(c, c, k, g, heads=4, head_channels=max(1, c // 4)),
    "AttentiveGroupConv": lambda c, k, g: AttentiveGroupConv(c, c, k, g),
}


@dataclass
class BenchRow:
    layer: str
    kernel_size: int
    neighbourhood: int
    params: int
    macs: int
    forward_ms: float
    forward_backward_ms: float
    saved_mb: float
    peak_mb: float | None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def _saved_bytes(layer: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct tensors autograd keeps for the backward pass of ``layer(x)`` (the input included,
    the parameters not)."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        seen[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x).sum()
    params = {(p.untyped_storage().data_ptr(), p.untyped_storage().nbytes()) for p in layer.parameters()}
    return sum(v for k, v in seen.items() if k not in params)


def _measure(
    layer: nn.Module, x: torch.Tensor, xg: torch.Tensor, dev: torch.device, repeats: int
) -> tuple[float, float, float | None]:
    """(forward ms, forward+backward ms, CUDA peak MB of one forward+backward or None)."""
    with torch.no_grad():
        fwd = _median_ms(lambda: layer(x), dev, repeats)

    def step() -> None:
        layer(xg).sum().backward()

    fb = _median_ms(step, dev, repeats)
    peak = None
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        step()
        _sync(dev)
        peak = (torch.cuda.max_memory_allocated(dev) - base) / 2**20
    return fwd, fb, peak


def benchmark_aggregations(
    kernel_sizes: Sequence[int] = (3, 5, 7),
    layers: Sequence[str] = tuple(LAYERS),
    channels: int = 16,
    size: int = 28,
    batch: int = 8,
    group: str = "p4",
    device: str = "cpu",
    repeats: int = 5,
    progress: bool = True,
) -> list[BenchRow]:
    """Measure every ``layers`` x ``kernel_sizes`` on a ``(batch, channels, |A|, size, size)`` input (float32)."""
    unknown = [name for name in layers if name not in LAYERS]
    if unknown:
        raise ValueError(f"unknown layer(s) {unknown}; known: {', '.join(LAYERS)}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available")
    g = resolve(group)
    configs = [(name, k) for k in kernel_sizes for name in layers]
    try:
        from tqdm import tqdm

        it = tqdm(configs, desc="aggregation bench", disable=not progress)
    except ImportError:  # pragma: no cover
        it = configs
    rows = []
    for name, k in it:
        layer = LAYERS[name](channels, k, group).to(dev).train()
        x = torch.randn(batch, channels, g.order, size, size, device=dev)
        xg = x.clone().requires_grad_(True)
        c = count(layer, (channels, g.order, size, size))
        fwd, fb, peak = _measure(layer.train(), x, xg, dev, repeats)
        saved = _saved_bytes(layer, xg) / 2**20
        rows.append(BenchRow(name, k, layer.neighbourhood_size(), c.params, c.macs, fwd, fb, saved, peak))
    return rows


def markdown_table(rows: Sequence[BenchRow], baseline: str = "GroupConv") -> str:
    """A markdown table; time / memory ratios against ``baseline`` at the same kernel size."""
    base = {r.kernel_size: r for r in rows if r.layer == baseline}
    head = (
        "| layer | k | \\|N(e)\\| | params | MACs/example (M) | fwd (ms) | fwd+bwd (ms) | fwd+bwd vs GroupConv "
        "| saved for bwd (MB) | saved vs GroupConv | CUDA peak (MB) |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        b = base.get(r.kernel_size)
        rt = f"{r.forward_backward_ms / b.forward_backward_ms:.2f}x" if b else "-"
        rm = f"{r.saved_mb / b.saved_mb:.2f}x" if b and b.saved_mb else "-"
        peak = f"{r.peak_mb:.1f}" if r.peak_mb is not None else "-"
        lines.append(
            f"| {r.layer} | {r.kernel_size} | {r.neighbourhood} | {r.params:,} | {r.macs / 1e6:.1f} | "
            f"{r.forward_ms:.1f} | {r.forward_backward_ms:.1f} | {rt} | {r.saved_mb:.1f} | {rm} | {peak} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m e4net.analysis.aggregation_bench",
        description="Time / memory of GroupConv, E4Conv, GroupSelfAttention and AttentiveGroupConv at several "
        "neighbourhood sizes (one float32 batch, training mode). Prints a markdown table; --json adds JSON lines.",
    )
    p.add_argument("--kernel-sizes", type=int, nargs="+", default=[3, 5, 7], help="odd spatial kernel sizes k")
    p.add_argument("--layers", nargs="+", default=list(LAYERS), choices=list(LAYERS), help="layers to measure")
    p.add_argument("--channels", type=int, default=16, help="input = output fields C")
    p.add_argument("--size", type=int, default=28, help="spatial size H = W of the input")
    p.add_argument("--batch", type=int, default=8, help="batch size")
    p.add_argument("--group", default="p4", choices=["p4", "p4m"], help="the group")
    p.add_argument("--device", default="cpu", help="'cpu' or 'cuda' (CUDA also reports peak memory)")
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions per measurement (median)")
    p.add_argument("--json", action="store_true", help="also print one JSON line per measurement")
    args = p.parse_args(argv)
    rows = benchmark_aggregations(
        args.kernel_sizes, args.layers, args.channels, args.size, args.batch, args.group, args.device, args.repeats
    )
    print(markdown_table(rows))
    if args.json:
        import json

        for r in rows:
            print(json.dumps(asdict(r)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    try:
        raise SystemExit(main())
    except ValueError as exc:
        import sys

        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
