"""supcon's losses as PyTorch modules.

:class:`SupConLoss` is an ``nn.Module`` over a ``torch.autograd.Function``: its forward runs the
Rust loss on the tensor's memory (no copy for a contiguous CPU tensor) and keeps the gradient
the loss returns; its backward is that gradient times ``grad_output``. The N × N similarity
matrix is never built, anchors without a positive are left out (never NaN), and the loss keeps
the features' dtype and device.

With ``distributed=True`` and ``torch.distributed`` initialised with a process group that
carries CPU tensors (gloo, or ``"cpu:gloo,cuda:nccl"`` next to NCCL), every rank's features and
labels are gathered, each rank computes the share of its own anchors against all rows, and the
shares are summed: the loss is the one-process loss of the whole batch on every rank. DDP
averages the ranks' gradients, so the gradient handed back is scaled by the world size: the
average is then exactly one process's gradient.

CUDA tensors go to the fused CUDA kernels in place (``_native.CUDA``: compiled in, the default):
the kernels read the features' device memory and write the gradient into a tensor on the same
device, in float32, with no host copy. They need the NVIDIA driver and NVRTC 13 (the
``nvidia-cuda-nvrtc`` wheel that PyTorch's CUDA 13 wheels bring is found and loaded).
``distributed=True`` gathers CPU tensors only.
"""

from __future__ import annotations

from typing import Optional, Tuple

import ctypes
import functools
import glob
import importlib.util
import os

import numpy as np
import torch
import torch.distributed as dist
from torch.autograd.function import once_differentiable

from . import _native
from ._native import SupConError

__all__ = ["SupConLoss", "NTXentLoss", "SupConError"]

_NUMPY_DTYPES = (torch.float32, torch.float64)


def _to_numpy(tensor: torch.Tensor, name: str) -> np.ndarray:
    """The tensor's memory as a NumPy array (a view for float32/float64 CPU tensors)."""
    if tensor.device.type != "cpu":
        raise SupConError(
            f"{name}: a {tensor.device.type} tensor; distributed=True gathers CPU tensors "
            f"(move it with .cpu())"
        )
    tensor = tensor.detach()
    if tensor.dtype not in _NUMPY_DTYPES:
        if not tensor.is_floating_point():
            raise SupConError(f"{name}: expected a floating-point tensor, got {tensor.dtype}")
        tensor = tensor.float()
    return tensor.numpy()


@functools.cache
def _load_nvrtc() -> None:
    """Loads NVRTC 13 from the ``nvidia`` wheels beside PyTorch (the kernels are compiled at
    first use, and the library is on no search path there), so that the extension finds it
    by name; once per process, not per step. Nothing happens when it is not there: the
    extension's error then says so."""
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec else []:
        for path in sorted(glob.glob(os.path.join(root, "*", "lib", "libnvrtc.so.13*"))):
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                return
            except OSError:
                continue


def _cuda_forward(features: torch.Tensor, labels: Optional[torch.Tensor], options: dict):
    """The loss of CUDA features by the fused kernels: checked on the device, read in place."""
    if not _native.CUDA:
        raise SupConError(
            "features: a cuda tensor; this build of supcon has no CUDA kernels "
            "(move it with .cpu(), or build the package with its default `cuda` feature)"
        )
    x = features.detach()
    if x.dim() == 2:
        x = x.unsqueeze(1)
    elif x.dim() != 3:
        raise SupConError(
            f"features: expected [batch, dim] or [batch, views, dim], got {x.dim()} dimensions"
        )
    if not x.is_floating_point():
        raise SupConError(f"features: expected a floating-point tensor, got {x.dtype}")
    x = x.to(torch.float32).contiguous()
    bad = (~torch.isfinite(x)).nonzero()
    if bad.numel() > 0:
        index = tuple(int(i) for i in bad[0])
        raise SupConError(f"features: value at index {index} is not finite ({float(x[index])})")
    if options["normalize"]:
        zero = (x.norm(dim=-1) == 0).nonzero()
        if zero.numel() > 0:
            raise SupConError(
                f"features: row {tuple(int(i) for i in zero[0])} is zero and cannot be normalized"
            )
    device = x.device.index if x.device.index is not None else torch.cuda.current_device()
    # The kernels run on the legacy default stream (PyTorch's default): work queued on another
    # current stream must be finished first.
    current = torch.cuda.current_stream(device)
    if current != torch.cuda.default_stream(device):
        current.synchronize()
    _load_nvrtc()
    grad = torch.empty_like(x)
    loss, anchors = _native._supcon_loss_cuda(
        x.data_ptr(), tuple(x.shape), grad.data_ptr(), device, _labels_to_numpy(labels), **options
    )
    return loss, grad.reshape(features.shape), anchors


def _labels_to_numpy(labels: Optional[torch.Tensor], name: str = "labels") -> Optional[np.ndarray]:
    if labels is None:
        return None
    if labels.is_floating_point() or labels.is_complex():
        raise SupConError(f"{name}: expected an integer tensor, got {labels.dtype}")
    return labels.detach().cpu().to(torch.int64).numpy()


def _gather_rows(local: torch.Tensor) -> Tuple[torch.Tensor, int]:
    """Every rank's rows in rank order (ranks may hold different counts), and this rank's
    offset in them."""
    world = dist.get_world_size()
    count = torch.tensor([local.shape[0]], dtype=torch.int64)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    counts = [int(c) for c in counts]
    longest = max(counts)
    padded = torch.zeros((longest,) + tuple(local.shape[1:]), dtype=local.dtype)
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    rank = dist.get_rank()
    return torch.cat([p[:c] for p, c in zip(parts, counts)]), sum(counts[:rank])


class _SupConFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, labels, options, distributed):  # noqa: D401
        if distributed:
            loss, grad, anchors = _distributed_forward(features, labels, options)
        elif features.is_cuda:
            loss, grad, anchors = _cuda_forward(features, labels, options)
        else:
            array = _to_numpy(features, "features")
            loss, grad, anchors = _native.supcon_loss(
                array, _labels_to_numpy(labels), **options
            )
            grad = torch.from_numpy(grad)
        ctx.save_for_backward(grad.to(features.dtype))
        ctx.anchors = anchors
        return torch.tensor(loss, dtype=features.dtype, device=features.device)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return grad.to(grad_output.device) * grad_output, None, None, None


def _distributed_forward(features, labels, options):
    """This rank's share of the gathered batch, summed over the ranks (see the module docs)."""
    local = torch.from_numpy(_to_numpy(features, "features"))
    everything, offset = _gather_rows(local)
    all_labels = None
    if labels is not None:
        all_labels, _ = _gather_rows(torch.from_numpy(_labels_to_numpy(labels)))
        all_labels = all_labels.numpy()
    share, grad, anchors = _native.supcon_loss(
        everything.numpy(),
        all_labels,
        anchors=(offset, offset + local.shape[0]),
        **options,
    )
    grad = torch.from_numpy(grad)
    totals = torch.tensor([share], dtype=torch.float64)
    dist.all_reduce(grad)
    dist.all_reduce(totals)
    # DDP averages the ranks' parameter gradients: scaled by the world size, the average is
    # the gradient of one process on the whole batch.
    mine = grad[offset : offset + local.shape[0]] * dist.get_world_size()
    return float(totals[0]), mine, anchors


class SupConLoss(torch.nn.Module):
    """Supervised contrastive loss (Khosla et al. 2020); SimCLR's NT-Xent without labels.

    Args:
        temperature: τ (0.1 as SupContrast; SimCLR uses 0.5).
        base_temperature: τ_base; the loss is scaled by τ / τ_base (SupContrast: 0.07).
            ``None``: τ (no scaling), pytorch-metric-learning's convention.
        variant: ``"out"`` (L_out, the paper's eq. 2) or ``"in"`` (L_in, eq. 3).
        contrast_mode: ``"all"`` (every view an anchor) or ``"one"`` (view 0 only).
        normalize: L2-normalize the features inside the loss (and back-propagate through it).
        distributed: gather every rank's features and labels (``torch.distributed``), compute
            this rank's share exactly, and hand DDP gradients that average to one process's.

    ``forward(features, labels=None)``: features ``[batch, views, dim]`` or ``[batch, dim]``
    (float32 or float64 on the CPU; on a CUDA device, computed in float32 by the fused
    kernels), labels ``[batch]`` integers. Returns the loss, a 0-d
    tensor of the features' dtype.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        base_temperature: Optional[float] = None,
        variant: str = "out",
        contrast_mode: str = "all",
        normalize: bool = True,
        distributed: bool = False,
    ):
        super().__init__()
        self.options = dict(
            temperature=temperature,
            base_temperature=base_temperature,
            variant=variant,
            contrast_mode=contrast_mode,
            normalize=normalize,
        )
        self.distributed = distributed

    def forward(self, features: torch.Tensor, labels: Optional[torch.Tensor] = None):
        distributed = self.distributed and dist.is_available() and dist.is_initialized()
        if self.distributed and not distributed:
            raise SupConError(
                "distributed=True needs torch.distributed to be initialised "
                "(torch.distributed.init_process_group)"
            )
        loss = _SupConFunction.apply(features, labels, self.options, distributed)
        return loss

    def extra_repr(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{options}, distributed={self.distributed}"


class NTXentLoss(SupConLoss):
    """SimCLR's NT-Xent: :class:`SupConLoss` with the views of one image as its only
    positives. ``forward(features)`` takes ``[batch, views, dim]`` (two views in SimCLR).
    """

    def __init__(self, temperature: float = 0.5, normalize: bool = True, distributed: bool = False):
        super().__init__(temperature=temperature, normalize=normalize, distributed=distributed)

    def forward(self, features: torch.Tensor, labels: Optional[torch.Tensor] = None):
        if labels is not None:
            raise SupConError("NTXentLoss takes no labels: use SupConLoss for labelled positives")
        if features.dim() != 3:
            raise SupConError(
                f"features: NT-Xent needs [batch, views, dim], got {features.dim()} dimensions"
            )
        return super().forward(features, None)
