"""MAC counting (Sec. 4.2) of the plain PyTorch layers by hand: non-square and grouped convolutions, exact ints."""

from __future__ import annotations

import pytest
import torch

import e4net
from e4net.analysis.count import module_macs


@pytest.mark.parametrize(("kernel_size", "groups"), [((3, 5), 1), ((5, 1), 2), ((1, 3), 4)])
def test_conv2d_macs_by_hand(kernel_size, groups):
    conv = torch.nn.Conv2d(4, 8, kernel_size, groups=groups, bias=False)
    cnt = e4net.count(conv, (4, 9, 11))
    kh, kw = kernel_size
    out_pixels = (9 - kh + 1) * (11 - kw + 1)
    assert cnt.macs == 8 * out_pixels * (4 // groups) * kh * kw
    assert (
        type(cnt.macs) is int and type(cnt.by_module["Conv2d"]) is int
    )  # counts, not floats; the root module is named by its type
    assert cnt.params == 8 * (4 // groups) * kh * kw


def test_linear_and_uncounted_modules():
    lin = torch.nn.Linear(6, 3)
    out = lin(torch.zeros(2, 6))
    assert module_macs(lin, (torch.zeros(2, 6),), out) == 18  # per example
    assert module_macs(torch.nn.ReLU(), (out,), out) is None
    cnt = e4net.count(torch.nn.Sequential(torch.nn.Flatten(), lin), (2, 3))
    assert (cnt.macs, cnt.params, cnt.by_module) == (18, 21, {"1": 18})
    assert str(cnt) == "params=21 macs=18"
    frozen = torch.nn.Linear(6, 3).requires_grad_(False)
    assert e4net.count(frozen, (6,)).params == 0  # learnable parameters only


def test_count_restores_eval_mode_and_refuses_bad_input():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2)).eval()
    e4net.count(model, (2,))
    assert not model.training  # restored to eval, as it was
    with pytest.raises(ValueError, match="count\\(\\) needs an nn.Module, got str"):
        e4net.count("model", (2,))
    with pytest.raises(ValueError, match=r"input_shape must be positive sizes without the batch dim, got \(2, 0\)"):
        e4net.count(model, (2, 0))
    parameterless = torch.nn.Flatten()
    assert e4net.count(parameterless, (2, 3)).params == 0
    double = torch.nn.Linear(2, 2).double()
    assert e4net.count(double, (2,)).macs == 4  # the input follows the parameters' dtype


class _CountsItsInput(torch.nn.Module):
    """A module whose own count reads its input: count() must pass the inputs of one example (batch size 1)."""

    def forward(self, x):
        return 2 * x

    def count_macs(self, inputs, output):
        return inputs[0].numel()


def test_count_passes_the_inputs_of_one_zero_example():
    seen = []
    probe = _CountsItsInput()
    probe.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    cnt = e4net.count(probe, (3, 4))
    assert cnt.macs == 12 and cnt.by_module == {"_CountsItsInput": 12}
    assert seen[0].shape == (1, 3, 4) and not seen[0].any() and seen[0].dtype == torch.float32


def test_by_module_names_and_sums_repeated_calls():
    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)
            self.probe = _CountsItsInput()

        def forward(self, x):
            return self.probe(self.lin(self.lin(x)))

    cnt = e4net.count(Twice(), (4,))
    assert cnt.by_module == {"lin": 32, "probe": 4} and cnt.macs == 36  # two calls of lin, summed under its name


def test_count_runs_on_the_parameters_device():
    """The zero input is made on the parameters' device (meta here: no data, shapes only)."""
    model = torch.nn.Sequential(torch.nn.Linear(5, 3)).to("meta")
    assert e4net.count(model, (5,)).macs == 15
