"""Type stubs of the compiled extension ``supcon._native``."""

from typing import Literal, Optional, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str
CUDA: bool
"""Whether the fused CUDA kernels were compiled in (a device and NVRTC are needed at run time)."""

FloatArray = Union[npt.NDArray[np.float32], npt.NDArray[np.float64]]
IntArray = Union[npt.NDArray[np.int64], npt.NDArray[np.int32]]

class SupConError(ValueError):
    """An input or option the loss rejects; the message names the input and the index."""

def supcon_loss(
    features: FloatArray,
    labels: Optional[IntArray] = None,
    *,
    temperature: float = 0.1,
    base_temperature: Optional[float] = None,
    variant: Literal["out", "in"] = "out",
    contrast_mode: Literal["all", "one"] = "all",
    normalize: bool = True,
    queue: Optional[FloatArray] = None,
    queue_labels: Optional[IntArray] = None,
    anchors: Optional[Tuple[int, int]] = None,
) -> Tuple[float, FloatArray, int]:
    """SupCon (SimCLR without labels) on ``[batch, views, dim]`` or ``[batch, dim]`` features.

    Returns ``(loss, grad, anchors)``: the loss, its gradient (the features' dtype and
    shape) and the number of anchors with a positive it averages over.
    ``anchors=(start, stop)``: the share of samples ``start..stop`` as anchors against every
    row (the shares of all ranks add up to the loss and gradient of the whole batch).
    """

def infonce(
    queries: FloatArray,
    positives: FloatArray,
    negatives: FloatArray,
    *,
    temperature: float = 0.07,
    normalize: bool = True,
) -> Tuple[float, FloatArray]:
    """InfoNCE (MoCo): negatives ``[K, dim]`` shared or ``[batch, m, dim]`` per query.

    Returns ``(loss, grad)`` with the gradient with respect to the queries.
    """

def _supcon_loss_cuda(
    features: int,
    shape: Tuple[int, int, int],
    grad: int,
    device: int,
    labels: Optional[IntArray] = None,
    *,
    temperature: float = 0.1,
    base_temperature: Optional[float] = None,
    variant: Literal["out", "in"] = "out",
    contrast_mode: Literal["all", "one"] = "all",
    normalize: bool = True,
) -> Tuple[float, int]:
    """Private: SupCon of float32 features at a CUDA device address (``supcon.torch`` calls it)."""
