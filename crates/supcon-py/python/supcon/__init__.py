"""supcon: contrastive losses from Rust (``supcon-loss``) for NumPy and PyTorch.

The functions here take NumPy arrays (float32 or float64, any layout, read in place) and return
the loss with its gradient; ``supcon.torch`` wraps them as PyTorch modules. Invalid input raises
:class:`SupConError` (a :class:`ValueError`) naming the input and, for values, the index.
"""

from ._native import SupConError, __version__, infonce, supcon_loss

__all__ = ["SupConError", "__version__", "infonce", "supcon_loss"]
