"""``e4net export RUN_DIR_OR_MODEL --format {onnx,torch} --out FILE``: a model as a file that runs without e4net.

The model (a run folder / checkpoint via :func:`e4net.train.load_trained`, or a registered name, ``--pretrained``
for its shipped weights) goes through :func:`e4net.export` (standard PyTorch operations, batch norms folded), then
``torch.export`` (``--format torch``: a ``.pt2`` archive, ``torch.export.load(FILE).module()``) or ONNX
(``--format onnx``, :mod:`e4net.deploy.onnx`), both with a dynamic batch dimension. The command reloads the file,
runs it on random inputs of the model's input shape and prints the largest absolute and relative difference from
the original model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

FORMATS = ("onnx", "torch")
PARITY_BATCH = 4


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "export",
        help="export a trained or registered model to ONNX or a torch.export archive (runs without e4net)",
        description="Export a model to a file that runs without e4net: ONNX (onnxruntime and other runtimes) or a "
        "torch.export archive (.pt2, torch.export.load(FILE).module()), with a dynamic batch dimension. Prints the "
        "file, its size and the parity measured on random inputs (max abs / rel difference from the original).",
    )
    p.add_argument(
        "source", metavar="RUN_DIR_OR_MODEL", help="a run folder or checkpoint of e4net train, or a model name"
    )
    p.add_argument("--format", choices=FORMATS, required=True, help="onnx (needs the export extra) or torch (.pt2)")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="the file to write")
    p.add_argument("--pretrained", action="store_true", help="a model name: use its shipped weights")
    p.set_defaults(func=run)
    return p


def _size(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def run(args: argparse.Namespace) -> int:
    import torch

    from ..deploy import export
    from ..errors import E4NetError
    from ..train.predict import load_source

    out: Path = args.out
    if not out.parent.exists():
        raise E4NetError(f"--out: the folder {out.parent} does not exist")
    if out.is_dir():
        raise E4NetError(f"--out: {out} is a folder; give a file name")
    if args.format == "onnx":
        from ..deploy.onnx import require_onnx

        require_onnx()
    src = load_source(args.source, pretrained=args.pretrained)
    plain = export(src.model)
    torch.manual_seed(0)
    x = torch.randn(PARITY_BATCH, *src.input_shape)
    with torch.no_grad():
        want = src.model(x)
    if args.format == "torch":
        program = torch.export.export(plain, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
        torch.export.save(program, out)
        with torch.no_grad():
            got = torch.export.load(out).module()(x)
    else:
        from ..deploy.onnx import onnx_session, run_onnx, to_onnx

        to_onnx(plain, src.input_shape, out)
        got = torch.from_numpy(run_onnx(onnx_session(out), x))
    diff = (got.double() - want.double()).abs().max().item()
    rel = diff / max(want.double().abs().max().item(), 1e-30)
    print(f"model   {src.name} ({src.source}{'' if src.trained else ', untrained weights'})")
    print(f"file    {out} ({args.format}, {_size(out.stat().st_size)})")
    print(
        f"parity  max abs diff {diff:.3g}, max rel diff {rel:.3g} (logits of {PARITY_BATCH} random "
        f"{'x'.join(map(str, src.input_shape))} inputs against the original model)"
    )
    return 0
