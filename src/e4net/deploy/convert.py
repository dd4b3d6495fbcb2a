"""``export(model)``: an e4net model as an inference-only module of standard PyTorch operations.

How. The model (a copy, in eval mode) is traced with ``torch.fx``; every e4net layer is a leaf of the trace and is
replaced by its e4net-free counterpart of :mod:`e4net.deploy.plain` (the containers of :mod:`e4net.models`, e.g.
a residual block, are traced through: their forward becomes the generated code of the graph). Then:

* lifting and group convolutions (Eq. 5) become one ``nn.Conv2d`` on their folded filter bank
  (:meth:`e4net.nn.LiftingConv.filter_bank`), one ``nn.Conv3d`` for the cube groups O / Oh on voxel grids;
* batch norms with running statistics become per-field affine maps and are folded into the layer before them when
  that layer ends in a per-field linear map (convolutions, 1x1 maps, the E4 layer through its V encoder,
  self-attention through its output map), also across k x k (x k) average pooling, and across max pooling when
  every scale is positive (then max commutes with the affine map);
* the E4 layer (Eqs. 11-12) becomes 1x1 convolutions, the generator's instance norm in elementary operations, the
  relative-position table as a constant gather and the spatial aggregation as pad + shifted slices + multiply-add
  over the k^2 (voxel grids: k^3) offsets (:class:`e4net.deploy.plain.E4Aggregation`);
* dropout and identities disappear.

The result is a ``torch.fx.GraphModule`` whose submodules are ``torch.nn`` modules and classes of
:mod:`e4net.deploy.plain` (which imports only torch): ``torch.export``, ONNX (:mod:`e4net.deploy.onnx`) and pickling
need nothing else of e4net. Outputs equal the model's eval-mode outputs to float round-off (``tests/test_export.py``
checks 1e-5 relative for every registered model, with randomised batch-norm statistics).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.fx as fx
from torch import nn

from ..models.attention import CenterCrop
from ..nn import (
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
from ..nn.aggregation import gather_relative
from . import plain

__all__ = ["export", "convert_layer", "CONVERTERS"]

Converter = Callable[[nn.Module], nn.Module]

#: e4net layer class -> the function that builds its :mod:`~e4net.deploy.plain` counterpart (eval mode).
CONVERTERS: dict[type, Converter] = {}

_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, GroupBatchNorm)
_CONVS = (nn.Conv2d, nn.Conv3d)


def _converts(*types: type) -> Callable[[Converter], Converter]:
    def deco(fn: Converter) -> Converter:
        for t in types:
            CONVERTERS[t] = fn
        return fn

    return deco


def _find_converter(module: nn.Module) -> Converter | None:
    """By exact class: a subclass may have changed ``forward`` (it is traced through instead, or refused)."""
    return CONVERTERS.get(type(module))


def convert_layer(module: nn.Module) -> nn.Module:
    """The :mod:`~e4net.deploy.plain` module equal to the e4net layer ``module`` in eval mode (no folding)."""
    fn = _find_converter(module)
    if fn is None:
        raise TypeError(f"export: no conversion for {type(module).__qualname__}")
    with torch.no_grad():
        return fn(module)


def _conv(weight: torch.Tensor, bias: torch.Tensor | None, stride: int = 1, padding: int = 0) -> nn.Module:
    """An ``nn.Conv2d`` holding ``weight (C_out, C_in, k, k)`` (an ``nn.Conv3d`` for ``(C_out, C_in, k, k, k)``) and
    ``bias``; its parameters need no gradient."""
    cout, cin, k = weight.shape[:3]
    conv_nd = {4: nn.Conv2d, 5: nn.Conv3d}[weight.dim()]
    conv = conv_nd(cin, cout, k, stride, padding, bias=bias is not None, device=weight.device, dtype=weight.dtype)
    conv.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
    if bias is not None:
        conv.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
    return conv


def _pad(layer: LiftingConv | GroupConv) -> int:
    return layer.kernel_size // 2 if layer.padding == "same" else 0


@_converts(LiftingConv)
def _lifting(m: LiftingConv) -> nn.Module:
    n = m.group.order
    bias = m.bias.repeat_interleave(n) if m.bias is not None else None
    return plain.LiftingConvNd(_conv(m.filter_bank(), bias, m.stride, _pad(m)), n)


@_converts(GroupConv)
def _group_conv(m: GroupConv) -> nn.Module:
    n = m.group.order
    bias = m.bias.repeat_interleave(n) if m.bias is not None else None
    return plain.GroupConvNd(_conv(m.filter_bank(), bias, m.stride, _pad(m)), n)


@_converts(SlotwiseLinear)
def _slotwise(m: SlotwiseLinear) -> nn.Module:
    return plain.SlotwiseConv(_conv(m.weight[:, :, None, None], m.bias))


def _affine_of(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` of an eval-mode batch norm with running statistics, computed in float64."""
    var, mean = bn.running_var.double(), bn.running_mean.double()
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -mean * scale + (bn.bias.double() if bn.bias is not None else 0.0)
    return scale.to(bn.running_mean.dtype), shift.to(bn.running_mean.dtype)


@_converts(*_BATCH_NORMS)
def _batch_norm(m: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    if m.running_mean is None:  # no running statistics: eval mode normalises with the batch's, like training
        bn = plain.BatchStatsNorm if isinstance(m, GroupBatchNorm) else type(m)  # any rank (voxel grids: 6)
        out = bn(m.num_features, m.eps, m.momentum, m.affine, False, device=m.weight.device, dtype=m.weight.dtype)
        out.load_state_dict(m.state_dict())
        return out.eval()
    return plain.FieldAffine(*_affine_of(m))


@_converts(GroupInstanceNorm)
def _instance_norm(m: GroupInstanceNorm) -> nn.Module:
    w = m.weight.detach().clone() if m.weight is not None else None
    b = m.bias.detach().clone() if m.bias is not None else None
    return plain.FieldInstanceNorm(w, b, m.eps)


@_converts(E4Conv)
def _e4(m: E4Conv) -> nn.Module:
    reduce = convert_layer(m.reduce)
    norm = convert_layer(m.norm)
    if isinstance(norm, plain.FieldAffine):  # generator_norm="batch": folded into W1
        reduce.fold_affine(norm.scale, norm.shift)
        norm = nn.Identity()
    index = m.relative_position_index  # (|A|, k^d)
    n, kk = index.shape
    slot = torch.arange(n, device=index.device)
    kernel_index = (index * n + slot[:, None]).t().reshape(kk * n)  # entry u |A| + a: index[a, u] |A| + a
    bias = m.bias.detach().clone() if m.bias is not None else None
    return plain.E4Aggregation(
        convert_layer(m.value), reduce, norm, convert_layer(m.span), kernel_index, m.kernel_size, m.slices, m.stride,
        bias,
    )  # fmt: skip


@_converts(GroupSelfAttention, LiftingSelfAttention)
def _self_attention(m: GroupSelfAttention | LiftingSelfAttention) -> nn.Module:
    if m.lifting:
        q, k, v = (copy.deepcopy(c).requires_grad_(False) for c in (m.query, m.key, m.value))
        mode = "lifting"
    else:
        q, k, v = (convert_layer(c) for c in (m.query, m.key, m.value))
        mode = "all" if m.query_slots == "all" else ("group" if m.over_group else "slot")
    rel = m.relative_encoding().detach().clone()
    return plain.SelfAttention(
        q, k, v, convert_layer(m.out), rel, m.heads, m.head_channels, m.kernel_size, m.group.order, mode
    )


@_converts(AttentiveGroupConv, AttentiveLiftingConv)
def _attentive(m: AttentiveGroupConv) -> nn.Module:
    n, s, k = m.group.order, m.slots, m.kernel_size
    cout, cin = m.out_channels, m.in_channels
    bank = gather_relative(m.weight.reshape(cout, cin, -1), m.relative_position_index).view(cout, cin, n, s, k * k)
    bank = bank.permute(1, 3, 0, 2, 4).reshape(cin * s, cout * n, k * k)
    fc1 = fc2 = spatial = None
    if m.fc1 is not None:
        fc1 = gather_relative(m.fc1, m.relative_position_index_group)  # (C_out, hidden, C_in, |A|, S)
        fc2 = gather_relative(m.fc2, m.relative_position_index_group)
    if m.spatial_weight is not None:
        ks = m.attention_kernel_size
        sp = gather_relative(m.spatial_weight.reshape(cout, 2, -1), m.relative_position_index_spatial)
        spatial = sp.transpose(1, 2).reshape(cout * n, 2 * s, ks, ks)
    pad = k // 2 if m.padding == "same" else 0
    bias = m.bias.detach().clone() if m.bias is not None else None
    return plain.AttentiveConv(
        *(t.detach().clone() if t is not None else None for t in (bank, fc1, fc2, spatial)), bias, cin, cout, s, n,
        k, pad,
    )  # fmt: skip


@_converts(GroupMaxPool, GroupAvgPool)
def _group_pool(m: nn.Module) -> nn.Module:
    return plain.GroupPool("max" if isinstance(m, GroupMaxPool) else "mean")


@_converts(SpatialMaxPool2d, SpatialAvgPool2d, SpatialMaxPool3d, SpatialAvgPool3d)
def _spatial_pool(m: SpatialMaxPool2d | SpatialAvgPool2d | SpatialMaxPool3d | SpatialAvgPool3d) -> nn.Module:
    kind = "max" if isinstance(m, (SpatialMaxPool2d, SpatialMaxPool3d)) else "avg"
    return plain.SpatialPool(kind, m.kernel_size, m.spatial_dims)


@_converts(GlobalMaxPool, GlobalAvgPool)
def _global_pool(m: GlobalMaxPool | GlobalAvgPool) -> nn.Module:
    return plain.GlobalPool("max" if isinstance(m, GlobalMaxPool) else "mean", m.group_pool, m.spatial_dims)


@_converts(CenterCrop)
def _crop(m: CenterCrop) -> nn.Module:
    return plain.CenterCrop(m.crop)


class _Tracer(fx.Tracer):
    """e4net layers are leaves (replaced whole); containers (models, blocks) are traced through."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return _find_converter(m) is not None or super().is_leaf_module(m, module_qualified_name)


def _set_submodule(gm: fx.GraphModule, target: str, module: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, name, module)


def _fold_target(gm: fx.GraphModule, node: fx.Node, scale: torch.Tensor) -> fx.Node | None:
    """The node of the layer a per-field affine map after ``node`` can be folded into, or None.

    Walks back over spatial pooling (average always; max when every scale is positive). Every node on the way must
    feed only the next one, and the layer must be called exactly once.
    """
    prev = node.args[0] if node.args else None
    while isinstance(prev, fx.Node) and prev.op == "call_module" and len(prev.users) == 1:
        module = gm.get_submodule(prev.target)
        if isinstance(module, plain.SpatialPool) and (module.kind == "avg" or bool((scale > 0).all())):
            prev = prev.args[0]
            continue
        calls = sum(1 for n in gm.graph.nodes if n.op == "call_module" and n.target == prev.target)
        foldable = hasattr(module, "fold_affine") or isinstance(module, _CONVS)
        return prev if foldable and calls == 1 else None
    return None


def _fold_affines(gm: fx.GraphModule) -> None:
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), plain.FieldAffine):
            continue
        affine = gm.get_submodule(node.target)
        target = _fold_target(gm, node, affine.scale)
        if target is None:
            continue
        layer = gm.get_submodule(target.target)
        if isinstance(layer, _CONVS):
            if layer.out_channels != affine.scale.numel():
                continue
            plain.fold_conv(layer, affine.scale, affine.shift)
        else:
            layer.fold_affine(affine.scale, affine.shift)
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)


def export(model: nn.Module) -> fx.GraphModule:
    """An inference-only copy of ``model`` in standard PyTorch operations, equal to ``model.eval()`` (module docstring).

    ``model`` itself is not changed. Raises a TypeError naming the module when a part of the model can be neither
    converted nor traced (e.g. a forward with data-dependent control flow outside the e4net layers).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"export: expected a torch.nn.Module, got {type(model).__name__}")
    source = copy.deepcopy(model).eval()
    if _find_converter(source) is not None:  # a single layer: trace it as the body of a container
        source = nn.Sequential(source)
    try:
        graph = _Tracer().trace(source)
    except Exception as exc:  # fx raises several types for untraceable code
        raise TypeError(
            f"export: cannot trace {type(model).__name__} ({type(exc).__name__}: {exc}); its forward must be "
            "traceable by torch.fx outside the e4net layers"
        ) from exc
    gm = fx.GraphModule(source, graph, class_name=f"Exported{type(model).__name__}")
    gm._tracer_cls = graph._tracer_cls = None  # pickled with the module otherwise (and it is e4net's)
    converted: dict[str, nn.Module] = {}
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        module = gm.get_submodule(node.target)
        if isinstance(module, (*_DROPOUTS, nn.Identity)):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
        elif node.target not in converted and _find_converter(module) is not None:
            converted[node.target] = convert_layer(module)
            _set_submodule(gm, node.target, converted[node.target])
    _fold_affines(gm)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    foreign = sorted({type(m).__module__ + "." + type(m).__qualname__ for m in gm.modules() if _is_e4net_layer(m, gm)})
    if foreign:
        raise TypeError(f"export: the exported module still holds e4net modules: {', '.join(foreign)}")
    return gm.eval().requires_grad_(False)


def _is_e4net_layer(m: nn.Module, root: nn.Module) -> bool:
    return m is not root and type(m).__module__.startswith("e4net.") and type(m).__module__ != plain.__name__
