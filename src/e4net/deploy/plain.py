"""The e4net-free inference modules that :func:`e4net.deploy.export` builds: this file imports only torch.

Each class is the eval-mode forward of an e4net layer restated with standard operations and its weights folded into
constants (buffers), so an exported model runs, pickles, traces (``torch.export``) and converts to ONNX with nothing
of e4net but this one file (and ``torch.export`` / ONNX files need not even that). Layout as in e4net: images
``(B, C, H, W)``, group feature maps ``(B, C, |A|, H, W)`` (:mod:`e4net.groups`); on voxel grids (the cube groups O,
Oh) volumes ``(B, C, D, H, W)`` and group feature maps ``(B, C, |A|, D, H, W)``. The modules are generic over the
number ``d`` of spatial dims: the convolutions hold an ``nn.Conv2d`` or an ``nn.Conv3d``, the others read ``d`` from
their input's rank (or, for pooling, from the e4net layer they replace).

* :class:`LiftingConvNd`, :class:`GroupConvNd` -- lifting and group convolutions (Eq. 5) as one ``nn.Conv2d`` /
  ``nn.Conv3d`` on the folded filter bank, with the reshapes between ``(B, C, |A|, *grid)`` and ``(B, C|A|, *grid)``;
* :class:`SlotwiseConv` -- the same 1x1 map at every group slot (``N2(g) = {g}`` of Eq. 12);
* :class:`FieldAffine` -- an eval-mode batch norm that could not be folded into the layer before it;
  :class:`BatchStatsNorm` -- a group batch norm without running statistics (it normalises with the batch's);
* :class:`FieldInstanceNorm` -- the E4 generator's per-example norm (``GroupNorm(C, C)``) in elementary operations;
* :class:`E4Aggregation` -- the E4 layer (Eqs. 11-12): 1x1 convolutions for V and the kernel generator, the
  relative-position table as a constant gather, and the spatial aggregation (the formula of
  :mod:`e4net.backends`) as pad + shifted slices + multiply-add over the k^d offsets (k*k, or k^3 on voxels);
* :class:`SelfAttention`, :class:`AttentiveConv` -- Eq. 6 and the attentive group convolution, with the relative
  encodings / gathered weights as constants and ``unfold`` written as padded shifted slices;
* pooling and :class:`CenterCrop`.

Layers that end in a per-field linear map implement ``fold_affine(scale, shift)``: ``y -> scale y + shift`` per
output field absorbed into their weights (how batch norms disappear). Everything here is tested against the e4net
layers it replaces (``tests/test_export.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LiftingConvNd", "GroupConvNd", "SlotwiseConv", "FieldAffine", "BatchStatsNorm", "FieldInstanceNorm",
    "E4Aggregation", "SelfAttention", "AttentiveConv", "GroupPool", "SpatialPool", "GlobalPool", "CenterCrop",
    "fold_conv", "offset_slices", "shifted_windows",
]  # fmt: skip


def fold_conv(conv: nn.Conv2d | nn.Conv3d, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """``conv(x) -> scale conv(x) + shift`` per output channel, in the weights of ``conv`` (a bias is added)."""
    with torch.no_grad():
        w = conv.weight.double() * scale.double().view(-1, *([1] * (conv.weight.dim() - 1)))
        b = shift.double() + scale.double() * (conv.bias.double() if conv.bias is not None else 0.0)
        conv.weight.copy_(w.to(conv.weight.dtype))
        if conv.bias is None:
            conv.bias = nn.Parameter(b.to(conv.weight.dtype), requires_grad=False)
        else:
            conv.bias.copy_(b.to(conv.bias.dtype))


def offset_slices(x: torch.Tensor, k: int, stride: int, out_grid: tuple[int, ...]) -> list[torch.Tensor]:
    """The ``k^d`` strided views of the (already padded) ``x`` that a k x ... x k window reads over the last
    ``d = len(out_grid)`` axes: view ``u`` (offsets ``(o_1, ..., o_d)`` row-major, ``u = o_1 k^(d-1) + ... + o_d``)
    is ``x[..., o_1 + stride i_1, ..., o_d + stride i_d]`` over the output grid ``i``.

    One slice per offset of the first axis, then each of those sliced along the next axis, ...: ``k + k^2 + ...``
    slices, fewer graph nodes than ``d`` slices per offset.
    """
    views, d = [x], len(out_grid)
    for axis, size in enumerate(out_grid):
        rest = (slice(None),) * (d - 1 - axis)
        views = [v[(..., slice(o, o + stride * (size - 1) + 1, stride), *rest)] for v in views for o in range(k)]
    return views


def shifted_windows(x: torch.Tensor, k: int, pad: int, stride: int = 1) -> torch.Tensor:
    """``x (B, C, H, W) -> (B, C, k*k, H', W')``: the k x k window of every output pixel, offsets row-major.

    ``F.unfold`` written as zero padding and k*k shifted (strided) slices (:func:`offset_slices`), which every graph
    format exports.
    """
    h, w = x.shape[-2], x.shape[-1]
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    xp = F.pad(x, (pad, pad, pad, pad)) if pad else x
    return torch.stack(offset_slices(xp, k, stride, (ho, wo)), 2)


class LiftingConvNd(nn.Module):
    """A lifting convolution: ``conv`` (``nn.Conv2d`` on images, ``nn.Conv3d`` on volumes; ``C_out |A|`` output
    channels, field-major), then ``(B, C_out, |A|, *grid)``."""

    def __init__(self, conv: nn.Conv2d | nn.Conv3d, order: int):
        super().__init__()
        self.conv, self.order = conv, order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).unflatten(1, (-1, self.order))

    def fold_affine(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        fold_conv(self.conv, scale.repeat_interleave(self.order), shift.repeat_interleave(self.order))


class GroupConvNd(LiftingConvNd):
    """A group convolution: ``(B, C_in, |A|, *grid)`` flattened to ``C_in |A|`` channels, ``conv``, unflattened."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.flatten(1, 2)).unflatten(1, (-1, self.order))


class SlotwiseConv(nn.Module):
    """The same 1x1 map ``C_in -> C_out`` at every pixel (voxel) and group slot of ``(B, C_in, |A|, *grid)``: a 1x1
    ``nn.Conv2d`` on the group axis and all spatial axes but the last flattened into one."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.flatten(2, -2)).unflatten(2, x.shape[2:-1])

    def fold_affine(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        fold_conv(self.conv, scale, shift)


def _per_channel(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.view(1, -1, *([1] * (x.dim() - 2)))


class FieldAffine(nn.Module):
    """``x * scale + shift`` per channel / field of ``(B, C, ...)``: an eval-mode batch norm."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor):
        super().__init__()
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * _per_channel(self.scale, x) + _per_channel(self.shift, x)


class BatchStatsNorm(nn.BatchNorm3d):
    """Batch norm with the statistics of the batch itself (no running statistics, so eval mode normalises as
    training does), per channel of ``(B, C, ...)`` of any rank: group feature maps on pixel and voxel grids."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 3:
            raise ValueError(f"BatchStatsNorm: expected (B, C, ...) with spatial axes, got {tuple(input.shape)}")


class FieldInstanceNorm(nn.Module):
    """Per example and field, normalise over group axis and space (biased variance), then ``weight x + bias``."""

    def __init__(self, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float):
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(2, x.dim()))
        mean = x.mean(dims, keepdim=True)
        centred = x - mean
        y = centred * torch.rsqrt(centred.square().mean(dims, keepdim=True) + self.eps)
        if self.weight is not None:
            y = y * _per_channel(self.weight, x) + _per_channel(self.bias, x)
        return y


class E4Aggregation(nn.Module):
    """The E4 layer (Eqs. 11-12) on ``(B, C_in, |A|, H, W)`` (or ``(B, C_in, |A|, D, H, W)``: ``d = 3`` spatial
    dims, k x k x k kernels) in standard operations.

    ``value`` (V) and ``reduce`` (W1) are :class:`GroupConvNd` / :class:`SlotwiseConv` 1x1 maps, ``norm`` the
    generator's norm (or ``nn.Identity`` when a batch norm was folded into ``reduce``), ``span`` (W2, with the
    static kernel bias) a :class:`SlotwiseConv` to ``s k^d`` channels. ``kernel_index`` (``k^d |A|``) is the
    relative-position table as a gather: entry ``u |A| + a`` is ``index[a, u] |A| + a``, so the kernel of slot ``a``
    at offset ``u`` is the generated kernel transformed by ``a``. Output channel ``c`` uses slice ``c mod s``. The
    aggregation is zero padding ``k // 2`` and, per offset ``u`` (row-major, :func:`offset_slices`), one
    multiply-add of a strided view of V with plane ``u`` of the transformed kernels.
    """

    def __init__(
        self,
        value: nn.Module,
        reduce: nn.Module,
        norm: nn.Module,
        span: nn.Module,
        kernel_index: torch.Tensor,
        kernel_size: int,
        slices: int,
        stride: int,
        bias: torch.Tensor | None,
    ):
        super().__init__()
        self.value, self.reduce, self.norm, self.span = value, reduce, norm, span
        self.register_buffer("kernel_index", kernel_index)
        self.register_buffer("bias", bias)
        self.kernel_size, self.slices, self.stride = kernel_size, slices, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s, st = self.kernel_size, self.slices, self.stride
        d = x.dim() - 3  # spatial dims: 2 (pixels), 3 (voxels)
        kk, p = k**d, k // 2
        v = self.value(x)
        xs = x[(..., *[slice(None, None, st)] * d)] if st > 1 else x
        t = self.span(F.relu(self.norm(self.reduce(xs))))  # (B, s k^d, |A|, *out_grid)
        n, out_grid = t.shape[2], tuple(t.shape[3:])
        kt = t.unflatten(1, (s, kk)).flatten(2, 3).index_select(2, self.kernel_index).unflatten(2, (kk, n))
        planes = kt.unsqueeze(1).unbind(3)  # k^d planes (B, 1, s, |A|, *out_grid)
        vp = F.pad(v, (p,) * (2 * d)).unflatten(1, (-1, s))  # (B, C/s, s, |A|, *padded grid)
        out = None
        for patch, plane in zip(offset_slices(vp, k, st, out_grid), planes):
            out = patch * plane if out is None else out.addcmul_(patch, plane)  # fused: 1.8x faster than +
        assert out is not None
        out = out.flatten(1, 2)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, *([1] * (d + 1)))
        return out

    def fold_affine(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        """The aggregation is linear in V per channel: scale V's output fields, shift through the bias."""
        self.value.fold_affine(scale, torch.zeros_like(shift))
        bias = shift.double() + (scale.double() * self.bias.double() if self.bias is not None else 0.0)
        self.bias = bias.to(shift.dtype)


class SelfAttention(nn.Module):
    """Local multi-head (group) self-attention, Eq. 6 (:class:`e4net.nn.GroupSelfAttention` and its lifting layer).

    ``rel``: the relative positional encoding as seen by every output slot (a constant); neighbours outside the
    image are masked out of the softmax. ``mode``: ``"lifting"``, ``"group"`` (softmax over the window times the
    group axis), ``"slot"`` (over the window in the query's own slot), ``"all"`` (the GSA-Nets code's form).
    """

    def __init__(
        self,
        query: nn.Module,
        key: nn.Module,
        value: nn.Module,
        out: nn.Module,
        rel: torch.Tensor,
        heads: int,
        head_channels: int,
        kernel_size: int,
        order: int,
        mode: str,
    ):
        super().__init__()
        self.query, self.key, self.value, self.out = query, key, value, out
        self.register_buffer("rel", rel)
        self.heads, self.head_channels, self.kernel_size, self.order, self.mode = (
            heads, head_channels, kernel_size, order, mode
        )  # fmt: skip

    def fold_affine(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        self.out.fold_affine(scale, shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b_, hh, ww = x.shape[0], x.shape[-2], x.shape[-1]
        n, k, h, d = self.order, self.kernel_size, self.heads, self.head_channels
        kk, p = k * k, hh * ww
        lifting = self.mode == "lifting"
        s_in = 1 if lifting else n

        def unfold(t: torch.Tensor) -> torch.Tensor:  # (B, h d, [S,] H, W) -> (B, h, H W, d, S, k*k)
            cols = shifted_windows(t.reshape(b_, h * d * s_in, hh, ww), k, k // 2)
            return cols.reshape(b_, h, d, s_in, kk, p).permute(0, 1, 5, 2, 3, 4)

        keys, values = unfold(self.key(x)), unfold(self.value(x))
        rel = self.rel
        if lifting:
            q = self.query(x).reshape(b_, h, d, 1, p).permute(0, 1, 4, 3, 2)
            pos = torch.einsum("bhpd,dan->bhpan", q.squeeze(3), rel)
        else:
            q = self.query(x).reshape(b_, h, d, n, p).permute(0, 1, 4, 3, 2)
            if self.mode == "all":
                pos = torch.einsum("bhpgd,dvgn->bhpvgn", q, rel)
            else:
                pos = torch.einsum("bhpad,dan->bhpan", q, rel)
        if self.mode != "slot":
            keys, values = keys.flatten(-2), values.flatten(-2).transpose(-1, -2)
            content = q @ keys
            scores = ((content.unsqueeze(3) if self.mode == "all" else content) + pos) * (1.0 / math.sqrt(d))
        else:
            keys, values = keys.transpose(3, 4), values.permute(0, 1, 2, 4, 5, 3)
            scores = ((q.unsqueeze(-2) @ keys).squeeze(-2) + pos) * (1.0 / math.sqrt(d))
        inside = shifted_windows(x.new_ones(1, 1, hh, ww), k, k // 2).reshape(kk, p).t() > 0.5  # (HW, k*k)
        valid = inside.repeat(1, scores.shape[-1] // kk)
        mask = valid.view(p, *[1] * (scores.dim() - 4), -1)
        attn = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)
        if self.mode == "all":
            attn = attn.sum(4)
        if self.mode != "slot":
            y = attn @ values
        else:
            y = (attn.unsqueeze(-2) @ values).squeeze(-2)
        return self.out(y.permute(0, 1, 4, 3, 2).reshape(b_, h * d, n, hh, ww))


class AttentiveConv(nn.Module):
    """The attentive group convolution (Romero et al. 2020) with its gathered weights as constants.

    ``bank`` ``(C_in S, C_out |A|, k*k)``: the transformed kernels for one batched matmul; ``fc1`` / ``fc2``: the
    channel-attention MLP per relative group element (None: no channel attention); ``spatial`` ``(C_out |A|, 2 S,
    k_s, k_s)``: the grouped spatial-attention convolution (None: none).
    """

    def __init__(
        self,
        bank: torch.Tensor,
        fc1: torch.Tensor | None,
        fc2: torch.Tensor | None,
        spatial: torch.Tensor | None,
        bias: torch.Tensor | None,
        in_channels: int,
        out_channels: int,
        slots: int,
        order: int,
        kernel_size: int,
        pad: int,
    ):
        super().__init__()
        for name, t in (("bank", bank), ("fc1", fc1), ("fc2", fc2), ("spatial", spatial), ("bias", bias)):
            self.register_buffer(name, t)
        self.in_channels, self.out_channels, self.slots, self.order = in_channels, out_channels, slots, order
        self.kernel_size, self.pad = kernel_size, pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b_, k, n, s = x.shape[0], self.kernel_size, self.order, self.slots
        cout, cin = self.out_channels, self.in_channels
        cols = shifted_windows(x.reshape(b_, cin * s, x.shape[-2], x.shape[-1]), k, self.pad)
        ho, wo = cols.shape[-2], cols.shape[-1]
        cols = cols.permute(1, 2, 0, 3, 4).reshape(cin * s, k * k, -1)
        c = torch.bmm(self.bank, cols).view(cin, s, cout, n, b_, ho, wo).permute(4, 2, 3, 0, 1, 5, 6)
        if self.fc1 is not None or self.spatial is not None:
            att = c
            if self.fc1 is not None:

                def mlp(stat: torch.Tensor) -> torch.Tensor:
                    hid = F.relu(torch.einsum("zoais,ojias->zoaj", stat, self.fc1))
                    return torch.einsum("zoaj,oijas->zoais", hid, self.fc2)

                alpha = torch.sigmoid(mlp(c.mean((-2, -1))) + mlp(c.amax((-2, -1))))
                att = att * alpha[..., None, None]
            if self.spatial is not None:
                stats = torch.stack([att.mean(3), att.amax(3)], 3)  # (B, C_out, |A|, 2, S, H', W')
                ks = self.spatial.shape[-1]
                y = F.conv2d(stats.reshape(b_, cout * n * 2 * s, ho, wo), self.spatial, None, 1, ks // 2, 1, cout * n)
                att = att * torch.sigmoid(y.view(b_, cout, n, ho, wo))[:, :, :, None, None]
            c = c - att
        y = c.sum((3, 4))
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1, 1)
        return y


class GroupPool(nn.Module):
    """Max (``"max"``) or mean (``"mean"``) over the group axis: ``(B, C, |A|, H, W) -> (B, C, H, W)``."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=2) if self.kind == "max" else x.mean(dim=2)


class SpatialPool(nn.Module):
    """k x k (``spatial_dims=3``: k x k x k) max / average pooling with stride k of images (volumes) or of every group
    slot of a group feature map."""

    def __init__(self, kind: str, kernel_size: int, spatial_dims: int = 2):
        super().__init__()
        self.kind, self.kernel_size, self.spatial_dims = kind, kernel_size, spatial_dims

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        if self.spatial_dims == 3:
            return F.max_pool3d(x, k) if self.kind == "max" else F.avg_pool3d(x, k)
        return F.max_pool2d(x, k) if self.kind == "max" else F.avg_pool2d(x, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == self.spatial_dims + 2:
            return self._pool(x)
        return self._pool(x.flatten(1, 2)).unflatten(1, (x.shape[1], x.shape[2]))


class GlobalPool(nn.Module):
    """Max / mean over space (``spatial_dims`` axes), and over the group axis when ``group_pool`` (or on images /
    volumes): ``(B, C)`` or ``(B, C, |A|)``."""

    def __init__(self, kind: str, group_pool: bool, spatial_dims: int = 2):
        super().__init__()
        self.kind, self.group_pool, self.spatial_dims = kind, group_pool, spatial_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.group_pool or x.dim() == self.spatial_dims + 2:
            y = x.flatten(2)
            return y.amax(-1) if self.kind == "max" else y.mean(-1)
        dims = tuple(range(-self.spatial_dims, 0))
        return x.amax(dims) if self.kind == "max" else x.mean(dims)


class CenterCrop(nn.Module):
    """Remove ``crop`` pixels on every side of the last two dims."""

    def __init__(self, crop: int):
        super().__init__()
        self.crop = crop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.crop
        return x[..., c : x.shape[-2] - c, c : x.shape[-1] - c] if c else x
