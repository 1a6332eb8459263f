"""Fine-tuning of shared weights: each centroid moves by the sum of the gradients of its weights.

Cluster assignments and the pruning mask stay fixed (Han et al. 2016, section 3.1); the remaining
float parameters (BatchNorm, biases) train alongside with the same plain SGD.
"""

from __future__ import annotations

import math
import sys

import torch
import torch.nn.functional as F
from torch import nn

from compress.data import ImageSet
from compress.errors import CompressError
from compress.logits import logits_of
from compress.sharing.container import SharedTensor


def finetune_centroids(model: nn.Module, shared: list[SharedTensor], train: ImageSet, normalization: dict, *,
                       epochs: int, lr: float = 1e-4, batch_size: int = 128, device="cpu", seed: int = 0,
                       log=None) -> list[dict]:
    """Train the codebooks of `shared` in place (and the model's other parameters) on images normalized by
    `normalization` (model.json's mean and std); returns per-epoch logs."""
    if epochs < 1:
        return []
    device = torch.device(device)
    model.to(device)
    params = dict(model.named_parameters())
    missing = [t.name for t in shared if t.name not in params]
    if missing:
        raise ValueError(f"shared tensors {missing} are not parameters of the model")
    centroids, indices, keeps = [], [], []
    for t in shared:
        centroids.append(torch.tensor(t.codebook, dtype=torch.float32, device=device, requires_grad=True))
        idx = torch.as_tensor(t.index, device=device)
        keeps.append(idx >= 0)
        indices.append(idx.clamp(min=0))
    shared_names = {t.name for t in shared}
    others = [p for n, p in params.items() if n not in shared_names and p.requires_grad]
    for t in shared:
        params[t.name].requires_grad_(True)
    opt = torch.optim.SGD([{"params": centroids}, {"params": others}], lr=lr, momentum=0.0)

    def materialize():
        with torch.no_grad():
            for t, c, idx, keep in zip(shared, centroids, indices, keeps):
                params[t.name].copy_(torch.where(keep, c[idx], torch.zeros((), device=device)).view(t.shape))

    batches = train.batches(batch_size, normalization["mean"], normalization["std"], train=True, device=device,
                            seed=seed, drop_last=len(train) > batch_size)
    history = []
    for epoch in range(epochs):
        batches.set_epoch(epoch)
        model.train()
        loss_sum, seen = 0.0, 0
        for x, y in batches:
            materialize()
            opt.zero_grad(set_to_none=True)
            for t in shared:
                params[t.name].grad = None
            loss = F.cross_entropy(logits_of(model(x)), y)
            loss.backward()
            for t, c, idx, keep in zip(shared, centroids, indices, keeps):
                g = params[t.name].grad.reshape(-1)
                c.grad = torch.zeros_like(c).index_add_(0, idx[keep], g[keep])
            opt.step()
            loss_sum += float(loss.detach()) * len(y)
            seen += len(y)
        entry = {"epoch": epoch + 1, "loss": loss_sum / max(seen, 1)}
        if not math.isfinite(entry["loss"]):
            raise CompressError(f"centroid fine-tuning diverged at epoch {epoch + 1} (loss NaN or infinity at "
                                f"lr {lr:g}); lower --lr")
        history.append(entry)
        (log or (lambda m: print(m, file=sys.stderr, flush=True)))(
            f"centroid fine-tuning epoch {epoch + 1}/{epochs}: loss {entry['loss']:.4f}")
    materialize()
    for t, c in zip(shared, centroids):
        t.codebook = c.detach().cpu().numpy().astype("float32")
    model.eval()
    return history
