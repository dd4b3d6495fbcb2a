"""``e4net eval CHECKPOINT``: test error, params, MACs and the measured invariance error of a trained model.

The model comes from :func:`e4net.train.load_trained` (with its training run's input normalisation), the test
error from :func:`e4net.train.evaluate`, the invariance error from :func:`e4net.analysis.invariance_error`: the
largest change of the predicted class probabilities when the test images are transformed by an element of the
model's group. An exactly invariant model (Sec. 3-4) gives float round-off; a plain CNN gives a large value.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .train import add_data_arguments


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint: test error, params, MACs, invariance error",
        description="Evaluate a checkpoint written by e4net train (OUT/checkpoint.pt): test error on the test set, "
        "params, MACs, and the invariance error: the largest change of the predicted probabilities when the test "
        "images are transformed by each element of the model's group (p4 / p4m / O / Oh; for a model without one, p4 on "
        "images and O on volumes).",
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


def run(args: argparse.Namespace) -> int:
    from ..io import install_plain_warnings

    install_plain_warnings()
    from .. import groups
    from ..analysis import count, invariance_error
    from ..data import load_dataset
    from ..errors import E4NetError
    from ..models import model_spec
    from ..train import evaluate, load_trained
    from ..train.distributed import resolve_device

    trained = load_trained(args.checkpoint, model=args.model)
    path, name = trained.source, trained.name
    dataset = args.dataset or trained.dataset
    data = load_dataset(
        dataset,
        args.data_root or trained.config.get("data_root"),
        download=args.download,
        verify=args.verify,
        checksum=args.checksum,
    )
    if data.num_classes != trained.num_classes:
        raise E4NetError(
            f"{path} was trained for {trained.num_classes} classes ({trained.dataset}); {dataset} has {data.num_classes}"
        )
    if tuple(data.input_shape) != tuple(trained.input_shape):
        raise E4NetError(
            f"{path} was trained on {trained.dataset} inputs {tuple(trained.input_shape)}, but {dataset} gives "
            f"{tuple(data.input_shape)}"
        )
    prepare = trained.prepare_for(data)  # the training run's normalisation when it is the same data set
    model = trained.model
    counts = count(model, data.input_shape)
    device = resolve_device(args.device)
    model.to(device)
    test = data.test.to(device)
    res = evaluate(
        model, test, prepare=prepare, batch_size=args.batch_size, device=device, limit=args.limit_test_batches
    )
    group_name = model_spec(name).group or ("O" if len(data.input_shape) == 4 else "p4")  # volumes: the cube's O
    group = groups.get(group_name)
    n_eval = res["n"] if not args.invariance_images else min(res["n"], args.invariance_images)
    inv = invariance_error(model, prepare(test.x[:n_eval]), group, args.batch_size)
    result = {
        "checkpoint": str(path),
        "model": name,
        "dataset": dataset,
        "epoch": trained.epoch,
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
    print(f"model            {name} ({path}, epoch {trained.epoch})")
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
