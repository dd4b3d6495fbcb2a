"""``e4net predict RUN_DIR_OR_MODEL IMAGE... [--top K] [--json]``: the top classes of PNG / JPEG files.

Images are read as the model's inputs (:func:`e4net.deploy.read_images`: grey or RGB, resized when only the size
differs, the training run's normalisation); the model comes from a run folder / checkpoint
(:func:`e4net.train.load_trained`) or a registered name (``--pretrained``: its shipped weights). A bad file
(missing, not an image, wrong channels or shape) is one error line naming it, and exit status 1.
"""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "predict",
        help="classify PNG / JPEG image files with a trained (or registered) model",
        description="Print the most probable classes of each image file for a model trained by e4net train (a run "
        "folder or checkpoint) or a registered model (--pretrained: shipped weights). Images are converted to the "
        "model's input: grey or RGB, resized to its input size when the aspect ratio matches, normalised like its "
        "training data.",
    )
    p.add_argument(
        "source", metavar="RUN_DIR_OR_MODEL", help="a run folder or checkpoint of e4net train, or a model name"
    )
    p.add_argument("images", metavar="IMAGE", nargs="+", help="PNG or JPEG files")
    p.add_argument("--top", type=int, default=3, metavar="K", help="how many classes to print per image (3)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    p.add_argument("--pretrained", action="store_true", help="a model name: use its shipped weights")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import sys

    from ..train.predict import load_source, predict_files

    src = load_source(args.source, pretrained=args.pretrained)
    if not src.trained:
        print(
            f"e4net predict: warning: {src.name} has untrained weights (give a run folder or --pretrained)",
            file=sys.stderr,
        )
    preds = predict_files(src, args.images, args.top)
    if args.json:
        doc = {
            "model": src.name,
            "source": src.source,
            "predictions": [
                {"file": p.file, "top": [{"class": c, "probability": prob} for c, prob in p.top]} for p in preds
            ],
        }
        print(json.dumps(doc, indent=2))
        return 0
    print(f"model {src.name} ({src.source})")
    for p in preds:
        classes = ", ".join(f"{c} ({prob:.1%})" for c, prob in p.top)
        print(f"{p.file}: {classes}")
    return 0
