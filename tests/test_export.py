"""e4net.export: every layer and every registered model as standard PyTorch operations, equal to the model in eval
mode (1e-5 relative in float32, batch norms folded with randomised statistics), needing nothing of e4net at run
time; torch.export of the result; ONNX in onnxruntime (1e-4, dynamic batch, exactly invariant to the group). Pixel
grids (p4, p4m) and voxel grids (O, Oh: the 3-D models and layers go through the same loops; more 3-D cases in
tests/test_export_3d.py)."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from functools import cache
from pathlib import Path

import pytest
import torch
from torch import nn

import e4net
from e4net.deploy import export, plain
from e4net.groups import get as get_group
from e4net.models import list_models, model_spec
from e4net.nn import (
    AttentiveGroupConv,
    AttentiveLiftingConv,
    E4Conv,
    GlobalAvgPool,
    GlobalMaxPool,
    GroupAvgPool,
    GroupBatchNorm,
    GroupConv,
    GroupInstanceNorm,
    GroupMaxPool,
    GroupSelfAttention,
    LiftingConv,
    LiftingSelfAttention,
    SlotwiseLinear,
    SpatialAvgPool2d,
    SpatialAvgPool3d,
    SpatialMaxPool2d,
    SpatialMaxPool3d,
)

REPO = Path(__file__).resolve().parent.parent
#: The registered models of e4net itself (other test modules register tiny ones), on pixel and voxel grids.
MODELS = [n for n in list_models() if model_spec(n).builder.__module__.startswith("e4net.")]
#: Models whose graph exports in a few seconds: in the default run; the others are marked slow (CI runs them too).
QUICK = {"p4cnn", "e4net3d", "gcnn3d", "cnn3d"}
#: ... and whose ONNX export does too (the exporter's cost grows with the graph: e4net3d's three E4 layers are 27
#: shifted multiply-adds each, about 10 s).
QUICK_ONNX = QUICK - {"e4net3d"}


def test_the_voxel_models_are_among_the_registered_models():
    assert {"e4net3d", "gcnn3d", "cnn3d"} <= set(MODELS)
    assert {len(model_spec(n).input_shape) for n in MODELS} == {3, 4}  # (C, H, W) and (C, D, H, W)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))


def randomise(model: nn.Module, x: torch.Tensor, seed: int = 0) -> nn.Module:
    """Random weights everywhere (zero-initialised ones too) and batch-norm statistics that are random but keep the
    activations O(1): measured on a random batch, then perturbed, with random affine parameters. Eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if (p == 0).all():
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        for bn in bns:
            bn.momentum = 1.0
            if bn.affine:
                bn.weight.copy_(torch.rand(bn.weight.shape, generator=g) + 0.5)
                bn.bias.copy_(0.3 * torch.randn(bn.bias.shape, generator=g))
        model.train()
        model(x)
        for bn in bns:
            if bn.running_mean is not None:
                bn.running_mean.add_(0.1 * torch.randn(bn.running_mean.shape, generator=g))
                bn.running_var.mul_(torch.rand(bn.running_var.shape, generator=g) * 0.45 + 0.8)
    return model.eval()


@cache
def _model(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    shape = model_spec(name).input_shape
    model = randomise(e4net.create_model(name), torch.randn(8, *shape))
    return model, torch.randn(2, *shape)


def _model_params(names=MODELS, quick=QUICK):
    return [pytest.param(n, marks=() if n in quick else pytest.mark.slow) for n in names]


# ---- layers ----------------------------------------------------------------------------------------------------------
G4, G8 = "p4", "p4m"
LAYERS = {
    "lifting": (lambda: LiftingConv(2, 3, 3, G4, bias=True), (2, 7, 7)),
    "lifting-valid-even": (lambda: LiftingConv(2, 3, 4, G8, padding="valid"), (2, 8, 8)),
    "lifting-stride2": (lambda: LiftingConv(2, 3, 3, G4, stride=2), (2, 7, 7)),
    "group": (lambda: GroupConv(2, 3, 3, G8, bias=True), (2, 8, 7, 7)),
    "group-1x1": (lambda: GroupConv(2, 3, 1, G4), (2, 4, 5, 5)),
    "group-valid": (lambda: GroupConv(2, 3, 2, G4, padding="valid"), (2, 4, 6, 6)),
    "slotwise": (lambda: SlotwiseLinear(2, 3, bias=True), (2, 4, 5, 5)),
    "e4": (lambda: E4Conv(4, 4, 3, G4, slices=2), (4, 4, 7, 7)),
    "e4-p4m-k5-bias": (lambda: E4Conv(4, 6, 5, G8, reduction=2, slices=3, bias=True), (4, 8, 7, 7)),
    "e4-stride2": (lambda: E4Conv(4, 4, 3, G4, slices=1, stride=2), (4, 4, 7, 7)),
    "e4-batch-norm": (lambda: E4Conv(4, 4, 3, G4, generator_norm="batch"), (4, 4, 6, 6)),
    **{
        f"e4-concat-{c}": ((lambda c=c: E4Conv(4, 4, 3, G4, concat=c)), (4, 4, 6, 6))
        for c in ("kernel", "value", "none")
    },
    "gsa": (lambda: GroupSelfAttention(4, 4, 3, G4, heads=2, head_channels=2), (4, 4, 5, 5)),
    "gsa-slot-full": (
        lambda: GroupSelfAttention(4, 4, 3, G8, heads=2, head_channels=3, over_group=False, positional="full"),
        (4, 8, 5, 5),
    ),
    "gsa-all": (lambda: GroupSelfAttention(4, 4, 3, G4, heads=2, head_channels=3, query_slots="all"), (4, 4, 5, 5)),
    "lsa": (lambda: LiftingSelfAttention(2, 4, 3, G4, heads=2, head_channels=2), (2, 5, 5)),
    "attentive": (lambda: AttentiveGroupConv(3, 2, 3, G4, attention_kernel_size=3, bias=True), (3, 4, 6, 6)),
    "attentive-valid": (lambda: AttentiveGroupConv(3, 2, 3, G4, "valid", spatial_attention=False), (3, 4, 7, 7)),
    "attentive-lifting": (lambda: AttentiveLiftingConv(2, 3, 3, G8, "valid", channel_attention=False), (2, 7, 7)),
    "instance-norm": (lambda: GroupInstanceNorm(3, G4), (3, 4, 5, 5)),
    "batch-norm": (lambda: GroupBatchNorm(3, G4), (3, 4, 5, 5)),
    "batch-norm-batch-stats": (lambda: GroupBatchNorm(3, G4, track_running_stats=False), (3, 4, 5, 5)),
    "pools": (
        lambda: nn.Sequential(SpatialMaxPool2d(2), SpatialAvgPool2d(2), GroupMaxPool(), GlobalAvgPool()),
        (3, 4, 8, 8),
    ),
    "pools-2": (lambda: nn.Sequential(GroupAvgPool(), GlobalMaxPool()), (3, 4, 5, 5)),
    "global-pools-keep-group": (lambda: nn.Sequential(GlobalMaxPool(False), nn.Flatten()), (3, 4, 5, 5)),
    # voxel grids: the cube's rotations O (24) and with reflections Oh (48)
    "lifting-O": (lambda: LiftingConv(2, 2, 3, "O", bias=True), (2, 5, 4, 3)),
    "lifting-Oh-valid-stride2": (lambda: LiftingConv(1, 2, 2, "Oh", stride=2, padding="valid"), (1, 6, 6, 6)),
    "group-O": (lambda: GroupConv(2, 2, 3, "O", bias=True), (2, 24, 4, 3, 5)),
    "group-Oh-valid-even": (lambda: GroupConv(1, 2, 2, "Oh", padding="valid"), (1, 48, 3, 3, 3)),
    "e4-O": (lambda: E4Conv(2, 4, 3, "O", slices=2), (2, 24, 3, 4, 5)),
    "e4-Oh-stride2-bias": (lambda: E4Conv(2, 2, 3, "Oh", reduction=2, slices=1, stride=2, bias=True), (2, 48, 5, 5, 5)),
    "e4-O-batch-norm": (lambda: E4Conv(2, 2, 3, "O", generator_norm="batch"), (2, 24, 3, 3, 3)),
    "e4-O-concat-none-k5": (lambda: E4Conv(2, 2, 5, "O", concat="none"), (2, 24, 4, 4, 4)),
    "instance-norm-O": (lambda: GroupInstanceNorm(3, "O"), (3, 24, 2, 3, 2)),
    "batch-norm-Oh": (lambda: GroupBatchNorm(3, "Oh"), (3, 48, 2, 3, 2)),
    "batch-norm-batch-stats-O": (lambda: GroupBatchNorm(3, "O", track_running_stats=False), (3, 24, 2, 3, 2)),
    "pools-3d": (
        lambda: nn.Sequential(
            SpatialMaxPool3d(2), SpatialAvgPool3d(2), GroupMaxPool(), SpatialMaxPool3d(2), GlobalAvgPool(spatial_dims=3)
        ),
        (3, 24, 8, 8, 8),
    ),
    "global-pools-keep-group-3d": (
        lambda: nn.Sequential(GlobalMaxPool(False, spatial_dims=3), nn.Flatten()),
        (3, 24, 3, 2, 3),
    ),
    "global-pools-of-volumes": (lambda: nn.Sequential(GlobalAvgPool(False, spatial_dims=3)), (3, 2, 3, 2)),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_every_layer_converts_exactly(name):
    build, shape = LAYERS[name]
    torch.manual_seed(1)
    layer = build()
    x = torch.randn(3, *shape)
    randomise(nn.Sequential(layer), x)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    out = export(layer)
    with torch.no_grad():
        want, got = layer(x), out(x)
    assert got.shape == want.shape
    assert _rel(got, want) < 1e-5
    assert layer.training is False  # export works on a copy; the layer stays as it was (here: eval from randomise)


def test_the_original_model_is_not_changed():
    model = nn.Sequential(LiftingConv(1, 2, 3, G4), GroupBatchNorm(2, G4), nn.Dropout(0.5)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = export(model)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not out.training and not any(p.requires_grad for p in out.parameters())


# ---- batch-norm folding -----------------------------------------------------------------------------------------------
class _ConvBNPool(nn.Module):
    def __init__(self, pool: nn.Module, group: str = G4):
        super().__init__()
        self.lift = LiftingConv(1, 3, 3, group)
        self.e4 = E4Conv(3, 4, 3, group, slices=2)
        self.bn1, self.pool, self.bn2 = GroupBatchNorm(4, group), pool, GroupBatchNorm(3, group)

    def forward(self, x):
        return self.bn1(self.e4(self.bn2(self.pool(self.lift(x)))))


def _affines(module: nn.Module) -> int:
    return sum(isinstance(m, plain.FieldAffine) for m in module.modules())


_POOLS = {2: (SpatialAvgPool2d, SpatialMaxPool2d), 3: (SpatialAvgPool3d, SpatialMaxPool3d)}


@pytest.mark.parametrize("pool", ["avg", "max"])
@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("group", [G4, "O"])
def test_batch_norms_fold_into_the_layer_before_them(pool, sign, group):
    torch.manual_seed(0)
    d = get_group(group).spatial_dims
    model = _ConvBNPool(_POOLS[d][pool == "max"](2), group)
    x = torch.randn(4, 1, *[8 if d == 2 else 4] * d)
    randomise(model, x)
    with torch.no_grad():
        model.bn2.weight.mul_(sign)  # a negative scale does not commute with max pooling
    out = export(model)
    with torch.no_grad():
        assert _rel(out(x), model(x)) < 1e-5
    folded_across_pool = pool == "avg" or sign > 0
    assert _affines(out) == (0 if folded_across_pool else 1)


@pytest.mark.parametrize(
    "name", _model_params(["e4net", "p4cnn", "r18", "p4-r18", "p4m-e4r18", "e4net3d", "gcnn3d", "cnn3d"])
)
def test_every_batch_norm_of_the_paper_models_is_folded(name):
    model, _ = _model(name)
    assert _affines(export(model)) == 0
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in export(model).modules())


# ---- every registered model --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", _model_params())
def test_every_registered_model_exports_exactly(name):
    model, x = _model(name)
    out = export(model)
    with torch.no_grad():
        want, got = model(x), out(x)
    assert _rel(got, want) < 1e-5, name
    layers = {type(m).__module__ for m in out.modules() if m is not out}
    assert all(mod.startswith("torch.") or mod == plain.__name__ for mod in layers), layers


@pytest.mark.parametrize("name", _model_params())
def test_torch_export_of_the_exported_module(name):
    model, x = _model(name)
    batch = torch.export.Dim("batch")
    program = torch.export.export(export(model), (x,), dynamic_shapes=({0: batch},))
    x3 = torch.randn(3, *x.shape[1:])
    with torch.no_grad():
        assert _rel(program.module()(x3), model(x3)) < 1e-5


def test_plain_imports_only_torch():
    tree = ast.parse(Path(plain.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "plain.py must not import relatively (from e4net)"
            imported.add(node.module.split(".")[0])
    assert imported <= {"torch", "math", "__future__"}, imported


_BLOCK_E4NET = """
import importlib.abc, sys
ALLOWED = {allowed!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if (name == "e4net" or name.startswith("e4net.")) and name not in ALLOWED:
            raise ImportError("blocked: " + name)
        return None
sys.meta_path.insert(0, Block())
import torch
"""


def _run_without_e4net(code: str, allowed: tuple[str, ...] = ()) -> str:
    script = _BLOCK_E4NET.format(allowed=set(allowed)) + textwrap.dedent(code)
    env = {"PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.mark.slow
def test_saved_exports_run_without_e4net(tmp_path):
    """The .pt2 of torch.export needs nothing of e4net; a pickled module needs only e4net/deploy/plain.py."""
    model = nn.Sequential(LiftingConv(1, 4, 3, G4), GroupBatchNorm(4, G4), nn.ReLU(), E4Conv(4, 4, 3, G4))
    model.append(GroupMaxPool())
    x = torch.randn(2, 1, 7, 7)
    randomise(model, x)
    out = export(model)
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(model(x), tmp_path / "y.pt")
    torch.save(out, tmp_path / "model.pt")
    program = torch.export.export(out, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, tmp_path / "model.pt2")
    check = f"""
    x, y = torch.load({str(tmp_path / "x.pt")!r}), torch.load({str(tmp_path / "y.pt")!r})
    """
    got = _run_without_e4net(
        check
        + f"""
    m = torch.export.load({str(tmp_path / "model.pt2")!r}).module()
    assert torch.allclose(m(x), y, atol=1e-5), (m(x) - y).abs().max()
    assert not [k for k in sys.modules if k.startswith("e4net")]
    print("ok")
    """
    )
    assert got.strip() == "ok"
    allowed = ("e4net", "e4net.deploy", "e4net.deploy.plain")
    got = _run_without_e4net(
        check
        + f"""
    m = torch.load({str(tmp_path / "model.pt")!r}, weights_only=False)
    with torch.no_grad():
        assert torch.allclose(m(x), y, atol=1e-5)
    print(sorted(k for k in sys.modules if k.startswith("e4net")))
    """,
        allowed,
    )
    assert got.strip() == str(sorted(allowed))


def test_untraceable_models_get_one_clear_error():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = LiftingConv(1, 2, 3, G4)

        def forward(self, x):
            y = self.conv(x)
            return y if y.sum() > 0 else -y

    with pytest.raises(TypeError, match="cannot trace Branchy"):
        export(Branchy())
    with pytest.raises(TypeError, match="expected a torch.nn.Module"):
        export("e4net")


def test_export_is_the_public_face():
    assert e4net.export is export


# ---- ONNX ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def onnx_runtime():
    for name in ("onnx", "onnxscript"):
        pytest.importorskip(name, reason='ONNX export needs the "export" extra: pip install -e ".[export]"')
    return pytest.importorskip("onnxruntime", reason='ONNX tests need the "export" extra: pip install -e ".[export]"')


@pytest.mark.parametrize("name", _model_params(quick=QUICK_ONNX))
def test_onnx_matches_and_stays_invariant(name, onnx_runtime, tmp_path):
    from e4net.deploy.onnx import onnx_session, run_onnx, to_onnx
    from e4net.groups import get

    model, x = _model(name)
    spec = model_spec(name)
    path = to_onnx(export(model), spec.input_shape, tmp_path / f"{name}.onnx")
    session = onnx_session(path, threads=1)
    for batch in (1, 3):  # the batch dimension is dynamic
        xb = torch.randn(batch, *spec.input_shape)
        with torch.no_grad():
            want = model(xb)
        got = torch.from_numpy(run_onnx(session, xb))
        assert got.shape == want.shape and _rel(got, want) < 1e-4, name
    if spec.group is None:
        return
    group = get(spec.group)
    xb = torch.randn(3, *spec.input_shape)
    base = torch.from_numpy(run_onnx(session, xb))
    for g in group.elements()[1:]:
        moved = torch.from_numpy(run_onnx(session, group.act_on_signal(xb, g).contiguous()))
        assert _rel(moved, base) < 1e-4, (name, g)


def test_onnx_invariance_test_can_fail(onnx_runtime, tmp_path):
    """A plain CNN is not invariant: the check of the test above sees it."""
    from e4net.deploy.onnx import onnx_session, run_onnx, to_onnx
    from e4net.groups import get

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten(), nn.Linear(3 * 5 * 5, 4)).eval()
    session = onnx_session(to_onnx(export(model), (1, 7, 7), tmp_path / "cnn.onnx"))
    x = torch.randn(2, 1, 7, 7)
    base = torch.from_numpy(run_onnx(session, x))
    assert _rel(torch.from_numpy(run_onnx(session, get("p4").act_on_signal(x, 1).contiguous())), base) > 1e-2


def test_missing_onnx_packages_are_one_clear_error(monkeypatch):
    from e4net.deploy import onnx as deploy_onnx
    from e4net.errors import E4NetError

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(E4NetError, match=r'needs onnxruntime \(not installed\): pip install "e4net\[export\]"'):
        deploy_onnx.require_onnx()
