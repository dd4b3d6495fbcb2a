"""The grids of runs behind the paper's tables and Fig. 2, with the paper's numbers beside each row.

Each :class:`Run` is one configuration (model, data set, model hyper-parameters, training-set size); ``e4net
reproduce`` trains it once per seed. Configurations that coincide (the E4-Net baseline appears in Tables 1, 2 and
3 three times) share their runs. The paper's values are quoted from its text: Table 1 (rot-MNIST), Table 2
(concatenation ablation), Table 3 (hyper-parameters s, r, k), Table 4 (CIFAR-10/100); Fig. 2's numbers are in
an appendix that is not part of the paper's text, so only its 5k-per-class end (= Table 4) is quoted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PaperValue:
    """The paper's reported numbers for a row (as printed: params / FLOPs are strings like ``"18.8K"``)."""

    test_error: float | None
    std: float | None
    params: str
    macs: str


@dataclass(frozen=True)
class Run:
    label: str
    model: str
    dataset: str
    model_args: dict[str, Any] = field(default_factory=dict)
    train_per_class: int | None = None
    paper: PaperValue | None = None

    @property
    def run_id(self) -> str:
        parts = [self.model, self.dataset]
        parts += [f"{k}={v}" for k, v in sorted(self.model_args.items())]
        if self.train_per_class:
            parts.append(f"n{self.train_per_class}")
        return "_".join(str(p) for p in parts)

    def __hash__(self) -> int:
        return hash(self.run_id)


P = PaperValue
BASE = P(1.29, 0.023, "18.8K", "17M")  # E4-Net, the baseline of Tables 1-3

TABLE1 = [
    Run("p4-SA [24]", "p4-sa", "mnist-rot", paper=P(2.54, 0.052, "44.67K", "400M")),
    Run("p4-CNN [5]", "p4cnn", "mnist-rot", paper=P(1.79, 0.043, "77.54K", "46.2M")),
    Run("α-p4-CNN [23]", "alpha-p4cnn", "mnist-rot", paper=P(1.69, 0.021, "73.13K", "27.0M")),
    Run("E4-Net", "e4net", "mnist-rot", paper=BASE),
    Run("E4-Net (Large)", "e4net-large", "mnist-rot", paper=P(1.17, 0.019, "41.1K", "36.9M")),
]

TABLE2 = [
    Run("None", "e4net", "mnist-rot", {"concat": "none"}, paper=P(4.10, 0.085, "9.9K", "8.9M")),
    Run("only K", "e4net", "mnist-rot", {"concat": "kernel"}, paper=P(1.96, 0.045, "14.4K", "13M")),
    Run("only V", "e4net", "mnist-rot", {"concat": "value"}, paper=P(1.52, 0.036, "14.4K", "13M")),
    Run("K&V", "e4net", "mnist-rot", {}, paper=BASE),
]

TABLE3 = [
    Run("s=1", "e4net", "mnist-rot", {"slices": 1}, paper=P(1.45, 0.022, "16.3K", "14.9M")),
    Run("s=2", "e4net", "mnist-rot", {}, paper=BASE),
    Run("s=4", "e4net", "mnist-rot", {"slices": 4}, paper=P(1.24, 0.026, "23.9K", "21.2M")),
    Run("r=1", "e4net", "mnist-rot", {}, paper=BASE),
    Run("r=2", "e4net", "mnist-rot", {"reduction": 2}, paper=P(1.33, 0.026, "13.0K", "12M")),
    Run("r=4", "e4net", "mnist-rot", {"reduction": 4}, paper=P(1.37, 0.025, "10.1K", "9.5M")),
    Run("k=3", "e4net", "mnist-rot", {"kernel_size": 3}, paper=P(1.46, 0.031, "15.6K", "14.3M")),
    Run("k=5", "e4net", "mnist-rot", {}, paper=BASE),
    Run("k=7", "e4net", "mnist-rot", {"kernel_size": 7}, paper=P(1.27, 0.021, "23.8K", "21.1M")),
]

_T4 = [  # label, model, (CIFAR-10 error, std), (CIFAR-100 error, std), params, FLOPs
    ("R18", "r18", (9.7, 0.43), (34.0, 0.76), "11M", "0.56G"),
    ("p4-R18", "p4-r18", (7.53, 0.21), (27.96, 0.56), "11M", "2.99G"),
    ("p4-E4R18", "p4-e4r18", (6.42, 0.14), (26.59, 0.36), "5.8M", "1.85G"),
    ("p4m-R18", "p4m-r18", (5.83, 0.17), (24.95, 0.42), "10.8M", "5.63G"),
    ("p4m-E4R18", "p4m-e4r18", (4.96, 0.16), (22.18, 0.46), "6.0M", "3.87G"),
]
TABLE4 = [Run(label, model, "cifar10", paper=P(*c10, params, flops)) for label, model, c10, _, params, flops in _T4] + [
    Run(label, model, "cifar100", paper=P(*c100, params, flops)) for label, model, _, c100, params, flops in _T4
]

FIG2_SIZES = (1000, 2000, 3000, 4000, 5000)
FIG2 = [
    Run(
        label, model, "cifar10", train_per_class=n, paper=P(c10[0], c10[1], params, flops) if n == 5000 else None
    )  # fmt: skip
    for label, model, c10, _c100, params, flops in _T4
    for n in FIG2_SIZES
]

GRIDS: dict[str, list[Run]] = {"table1": TABLE1, "table2": TABLE2, "table3": TABLE3, "table4": TABLE4, "fig2": FIG2}
