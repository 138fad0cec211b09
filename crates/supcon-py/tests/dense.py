"""Dense reference formulas written from the papers (the N × N matrix built, autograd for the
gradient): what the tests compare supcon's losses with."""

import torch
import torch.nn.functional as F


def supcon(features, labels=None, temperature=0.1, base_temperature=None, normalize=True):
    """SupContrast's L_out (Khosla et al. 2020, eq. 2) on ``[batch, views, dim]``, every view
    an anchor; anchors without a positive are left out; SimCLR without labels."""
    batch, views, _ = features.shape
    rows = F.normalize(features, dim=-1) if normalize else features
    contrast = torch.cat(torch.unbind(rows, dim=1), dim=0)
    classes = (labels if labels is not None else torch.arange(batch)).repeat(views)
    logits = contrast @ contrast.T / temperature
    itself = torch.eye(batch * views, dtype=torch.bool)
    logits = logits.masked_fill(itself, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (classes[:, None] == classes[None, :]) & ~itself
    has_positive = positives.any(dim=1)
    mean_log_positive = log_prob.masked_fill(~positives, 0.0).sum(1) / positives.sum(1).clamp(min=1)
    scale = temperature / (base_temperature or temperature)
    return -(scale * mean_log_positive[has_positive]).mean()


def infonce(queries, positives, negatives, temperature=0.07, normalize=True):
    """MoCo's InfoNCE: cross-entropy with the positive at index 0; negatives ``[K, dim]``."""
    if normalize:
        queries, positives, negatives = (F.normalize(x, dim=-1) for x in (queries, positives, negatives))
    positive = (queries * positives).sum(-1, keepdim=True)
    logits = torch.cat([positive, queries @ negatives.T], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(queries), dtype=torch.long))
