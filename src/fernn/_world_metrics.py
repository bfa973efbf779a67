"""Metrics of predicted frames as the world-model benchmark reports them (FLOWM.md §5).

Predictions and targets are clamped to [0, 1] first. Per predicted step k:

- MSE: pooled over the batch and every pixel of step k;
- PSNR: ``10·log10(1 / MSE_pooled)`` (from the pooled MSE, not a mean of per-frame PSNRs);
- SSIM: torchmetrics' ``structural_similarity_index_measure`` (11×11 Gaussian, σ = 1.5,
  data range 1) of every frame, averaged over the batch.

The whole-rollout figures pool the same way over all steps. torchmetrics (installed with
Lightning) is imported only when SSIM is asked for.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["world_metrics", "psnr_from_mse"]


def psnr_from_mse(mse: Tensor | float) -> Tensor | float:
    """``10·log10(1 / mse)`` for frames in [0, 1] (inf for a perfect prediction)."""
    if isinstance(mse, Tensor):
        return 10.0 * torch.log10(1.0 / mse)
    return 10.0 * math.log10(1.0 / mse) if mse > 0 else math.inf


def world_metrics(pred: Tensor, target: Tensor, ssim: bool = True) -> dict:
    """Per-step and whole-rollout MSE, PSNR and SSIM of ``pred`` against ``target``.

    Shapes: ``(B, P, C, H, W)`` both (P predicted steps). Returns a dict of float64 CPU
    tensors ``"mse"``, ``"psnr"``, ``"ssim"`` of shape ``(P,)`` (per step) and floats
    ``"mse_pooled"``, ``"psnr_pooled"``, ``"ssim_mean"`` (``ssim=False`` leaves SSIM out).
    """
    if not isinstance(pred, Tensor) or pred.dim() != 5 or pred.shape != target.shape:
        got = (tuple(pred.shape) if isinstance(pred, Tensor) else type(pred).__name__,
               tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__)
        raise ValueError(f"pred and target must both be (B, P, C, H, W) of one shape; got {got}")
    p = pred.detach().clamp(0.0, 1.0).double()
    t = target.detach().clamp(0.0, 1.0).double()
    sq = (p - t).pow(2)
    mse = sq.mean(dim=(0, 2, 3, 4)).cpu()  # (P,)
    pooled = float(sq.mean())
    out = {"mse": mse, "psnr": psnr_from_mse(mse), "mse_pooled": pooled,
           "psnr_pooled": psnr_from_mse(pooled)}
    if ssim:
        from torchmetrics.functional.image import structural_similarity_index_measure

        B, P = p.shape[:2]
        per_frame = structural_similarity_index_measure(
            p.flatten(0, 1), t.flatten(0, 1), gaussian_kernel=True, sigma=1.5, kernel_size=11,
            data_range=1.0, reduction="none")  # (B·P,)
        per_frame = per_frame.view(B, P).cpu()
        out["ssim"] = per_frame.mean(0)
        out["ssim_mean"] = float(per_frame.mean())
    return out
