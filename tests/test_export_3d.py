"""Deployment of the 3-D models (cube groups O / Oh on voxel grids), beside the "every registered model" loops of
tests/test_export.py that cover e4net3d, gcnn3d and cnn3d: ``torch.export`` of the original model with the default
(numba) backend through the 3-D custom ops; an Oh network's ONNX file invariant to all 48 elements in onnxruntime;
``e4net export`` from a 3-D run folder; ``e4net predict`` refusing a 3-D model with one clear error."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import e4net
from e4net.backends import output_size
from e4net.groups import OH, O
from e4net.models import create_model
from e4net.nn import E4Conv, GlobalMaxPool, GroupBatchNorm, GroupMaxPool, LiftingConv

# ---- torch.export of the original model: the fused 3-D numba kernels as custom ops -----------------------------------


@pytest.mark.parametrize("group, size, stride", [(O, (3, 4, 5), 1), (OH, (3, 2, 3), 2)], ids=["O", "Oh-stride2"])
def test_3d_custom_ops_pass_torch_library_opcheck(group, size, stride):
    """``torch.ops.e4net.numba_aggregate_3d`` and ``numba_aggregate_generated_3d`` are well-formed custom ops:
    schema, fake implementation, autograd registration and their agreement with the compiled kernels."""
    import e4net.backends.numba_agg3d  # noqa: F401 - registers the ops

    gen = torch.Generator().manual_seed(0)
    k, n = 3, group.order
    out = [output_size(m, k, stride) for m in size]

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, dtype=torch.float64, generator=gen, requires_grad=True)

    v, index = randn(1, 2, n, *size), group.relative_position_index(k)
    torch.library.opcheck(
        torch.ops.e4net.numba_aggregate_3d.default, (v, randn(1, 2, k**3, n, *out), randn(2, k**3), index, stride)
    )
    hidden, weight, bias = randn(1, 3, n, *out), randn(2 * k**3, 3), randn(2 * k**3)
    torch.library.opcheck(
        torch.ops.e4net.numba_aggregate_generated_3d.default, (v, hidden, weight, bias, index, stride)
    )


def test_default_3d_model_exports_with_the_fused_kernel_in_the_graph():
    """``torch.export`` of e4net3d in eval mode with the default backend (numba on CPU) traces each E4 layer's fused
    aggregation as one custom op (no ``.numpy()`` on fake tensors), with a dynamic batch, and computes what the model
    computes."""
    from e4net.backends import resolve_backend

    assert resolve_backend("auto", torch.device("cpu")) == "numba"
    torch.manual_seed(0)
    model = create_model("e4net3d", fields=2).eval()
    x = torch.randn(2, 1, 16, 16, 16)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert targets.count("e4net.numba_aggregate_generated_3d.default") == 3, sorted(set(targets))
    x3 = torch.randn(3, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x3), model(x3))


# ---- ONNX: an Oh network stays invariant to all 48 elements in onnxruntime ---------------------------------------------
class _OhNet(nn.Module):
    """Lifting (Oh) -> batch norm -> ReLU -> E4 layer (Oh) -> batch norm -> group and global max pool -> linear: the
    layers of e4net3d on the 48-element group (no Oh model is registered)."""

    def __init__(self, fields: int = 2):
        super().__init__()
        self.lift, self.bn1 = LiftingConv(1, fields, 2, "Oh", stride=2, padding="valid"), GroupBatchNorm(fields, "Oh")
        self.e4, self.bn2 = E4Conv(fields, fields, 3, "Oh", slices=2), GroupBatchNorm(fields, "Oh")
        self.head = nn.Sequential(GroupMaxPool(), GlobalMaxPool(), nn.Linear(fields, 3))

    def forward(self, x):
        return self.head(self.bn2(self.e4(self.bn1(self.lift(x)).relu())).relu())


def test_onnx_of_an_oh_network_matches_and_is_invariant_to_all_48_elements(tmp_path):
    for name in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(name, reason='ONNX tests need the "export" extra: pip install -e ".[export]"')
    from test_export import _rel, randomise

    from e4net.deploy.onnx import onnx_session, run_onnx, to_onnx

    torch.manual_seed(0)
    shape = (1, 6, 6, 6)
    model = randomise(_OhNet(), torch.randn(8, *shape))
    plain = e4net.export(model)
    assert not [m for m in plain.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]  # folded
    session = onnx_session(to_onnx(plain, shape, tmp_path / "oh.onnx"), threads=1)
    x = torch.randn(3, *shape)
    with torch.no_grad():
        want = model(x)
    base = torch.from_numpy(run_onnx(session, x))
    assert _rel(base, want) < 1e-4
    assert OH.order == 48
    for g in OH.elements()[1:]:
        moved = torch.from_numpy(run_onnx(session, OH.act_on_signal(x, g).contiguous()))
        assert _rel(moved, base) < 1e-4, g


# ---- the command line: e4net export from a 3-D run folder, e4net predict refuses a 3-D model -------------------------
@pytest.fixture(scope="module")
def run_3d(tmp_path_factory):
    """e4net3d (2 fields) trained for one step on 20 volumes of digits3d (~3 s)."""
    from e4net.train import TrainConfig, train

    out = tmp_path_factory.mktemp("export3d") / "run"
    train(
        TrainConfig(
            model="e4net3d",
            dataset="digits3d",
            model_args={"fields": 2},
            out=str(out),
            epochs=1,
            batch_size=20,
            train_per_class=2,
            limit_test_batches=1,
            progress=False,
        )  # fmt: skip
    )
    return out


def _parity(text: str) -> float:
    return float(text.split("max rel diff ")[1].split()[0])


def test_export_cli_from_a_3d_run_folder(run_3d, capsys, tmp_path):
    from e4net.cli.main import main
    from e4net.train import load_trained

    out = tmp_path / "e4net3d.pt2"
    assert main(["export", str(run_3d), "--format", "torch", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("model   e4net3d") and str(out) in lines[1]
    assert "1x16x16x16 inputs" in lines[2] and _parity(lines[2]) < 1e-5
    program = torch.export.load(out).module()
    x = torch.randn(3, 1, 16, 16, 16)  # another batch size: the batch dimension is dynamic
    with torch.no_grad():
        assert torch.allclose(program(x), load_trained(run_3d).model(x), atol=1e-5)


@pytest.mark.slow
def test_export_cli_onnx_from_a_3d_run_folder(run_3d, capsys, tmp_path):
    for name in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(name, reason='ONNX export needs the "export" extra: pip install -e ".[export]"')
    from e4net.cli.main import main

    assert main(["export", str(run_3d), "--format", "onnx", "--out", str(tmp_path / "e4net3d.onnx")]) == 0
    text = capsys.readouterr().out
    assert "(onnx, " in text and _parity(text) < 1e-4


def test_predict_refuses_a_3d_model_with_one_clear_error(run_3d, capsys, tmp_path):
    from PIL import Image

    from e4net.cli.main import main

    png = tmp_path / "digit.png"
    Image.new("L", (16, 16)).save(png)
    for source in (str(run_3d), "e4net3d"):
        for files in ([png], [tmp_path / "missing.png"]):  # refused before any file is read
            assert main(["predict", source, *map(str, files)]) == 1
            err = [line for line in capsys.readouterr().err.splitlines() if "warning" not in line]
            assert len(err) == 1 and "Traceback" not in err[0], err
            assert err[0].startswith("e4net predict: error: image files (PNG / JPEG) are inputs of models on images")
            assert "1x16x16x16 inputs (voxel volumes C x D x H x W of a 3-D model)" in err[0], err
