"""``e4net eval CHECKPOINT``: test error, params, MACs and the measured invariance error of a trained model.

The invariance error is the largest change of the predicted class probabilities when the test images are
transformed by an element of the model's group (:meth:`e4net.groups.Group.act_on_image`), over all elements and
images: ``max_{g, x, c} |softmax(f(T_g x))_c - softmax(f(x))_c|``. An exactly invariant model (Sec. 3-4) gives
float round-off; a plain CNN gives a large value.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from .train import add_data_arguments


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint: test error, params, MACs, invariance error",
        description="Evaluate a checkpoint written by e4net train (OUT/checkpoint.pt): test error on the test set, "
        "params, MACs, and the invariance error: the largest change of the predicted probabilities when the test "
        "images are transformed by each element of the model's group (p4 / p4m; p4 for a model without one).",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint file, or a run folder holding checkpoint.pt")
    add_data_arguments(p)
    p.add_argument("--model", help="expected model name (refuses a checkpoint of another model)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA if available")
    p.add_argument("--batch-size", type=int, default=256, help="evaluation batch size (256)")
    p.add_argument("--limit-test-batches", type=int, metavar="N", help="evaluate on the first N test batches only")
    p.add_argument(
        "--invariance-images",
        type=int,
        default=2000,
        metavar="N",
        help="measure the invariance error on the first N evaluated test images (2000; 0: all of them)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    p.set_defaults(func=run)
    return p


@torch.no_grad()
def invariance_error(model: torch.nn.Module, x: torch.Tensor, group, batch_size: int = 256) -> dict[str, float]:
    """``{element name: max |p(T_g x) - p(x)|}`` for every element ``g`` of ``group`` (``x`` prepared inputs)."""
    model.eval()
    out = {group.element_name(g): 0.0 for g in group.elements()}
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        p0 = model(xb).float().softmax(-1)
        for g in group.elements():
            pg = model(group.act_on_image(xb, g)).float().softmax(-1)
            name = group.element_name(g)
            out[name] = max(out[name], float((pg - p0).abs().max()))
    return out


def run(args: argparse.Namespace) -> int:
    from ..io import install_plain_warnings

    install_plain_warnings()
    from .. import groups
    from ..analysis import count
    from ..data import load_dataset
    from ..data.loader import BatchLoader
    from ..errors import E4NetError
    from ..models import model_spec
    from ..train.checkpoint import CheckpointError, load_checkpoint, load_model_state
    from ..train.distributed import resolve_device
    from ..train.loop import build_model, evaluate

    path = Path(args.checkpoint)
    if path.is_dir():
        path = path / "checkpoint.pt"
    ckpt = load_checkpoint(path)
    name = ckpt["model"]
    if args.model and args.model != name:
        raise CheckpointError(f"{path} is a checkpoint of model {name!r}, not {args.model!r}")
    cfg = ckpt.get("config", {})
    dataset = args.dataset or ckpt["dataset"]
    data = load_dataset(
        dataset,
        args.data_root or cfg.get("data_root"),
        download=args.download,
        verify=args.verify,
        checksum=args.checksum,
    )
    if data.num_classes != ckpt["num_classes"]:
        raise E4NetError(
            f"{path} was trained for {ckpt['num_classes']} classes ({ckpt['dataset']}); {dataset} has {data.num_classes}"
        )
    norm = ckpt.get("normalisation")
    if norm and ckpt["dataset"] == dataset:  # the training statistics the model was trained with
        data.scale, data.mean, data.std = norm["scale"], norm["mean"], norm["std"]
    model = build_model(name, data.num_classes, ckpt.get("model_args", {}), data.input_shape)
    load_model_state(model, ckpt["model_state"], str(path), name)
    counts = count(model, data.input_shape)
    device = resolve_device(args.device)
    model.to(device).eval()
    test = data.test.to(device)
    res = evaluate(model, data, test, batch_size=args.batch_size, device=device, limit=args.limit_test_batches)
    group_name = model_spec(name).group or "p4"
    group = groups.get(group_name)
    n_eval = res["n"] if not args.invariance_images else min(res["n"], args.invariance_images)
    loader = BatchLoader(test, len(test), shuffle=False, prepare=data.prepare)
    x = next(iter(loader.batches(0)))[0][:n_eval]
    inv = invariance_error(model, x, group, args.batch_size)
    result = {
        "checkpoint": str(path),
        "model": name,
        "dataset": dataset,
        "epoch": ckpt["epoch"],
        "test_error": res["error"],
        "test_loss": res["loss"],
        "test_images": res["n"],
        "params": counts.params,
        "macs": counts.macs,
        "group": group_name + ("" if model_spec(name).group else " (the model has no group)"),
        "invariance_error": max(inv.values()),
        "invariance_error_by_element": inv,
        "invariance_images": n_eval,
    }
    print(f"model            {name} ({path}, epoch {ckpt['epoch']})")
    print(f"test error       {res['error']:.2f}%  ({res['n']} {dataset} test images, loss {res['loss']:.4f})")
    print(f"params           {counts.params:,}")
    print(f"MACs             {counts.macs:,}")
    print(
        f"invariance error {result['invariance_error']:.3g}  (max |p(T_g x) - p(x)| over the {group.order} elements "
        f"of {result['group']}, {n_eval} images; by element: " + ", ".join(f"{k} {v:.2g}" for k, v in inv.items()) + ")"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    sys.stdout.flush()
    return 0
