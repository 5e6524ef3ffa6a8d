"""Distribution math shared by the priors and the loss terms: closed-form KLs and Gumbel-softmax sampling."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F


def reparameterise(mean: Tensor, var: Tensor) -> Tensor:
    """Draw z = mean + sqrt(var) * eps with eps ~ N(0, I), differentiable in mean and var; shapes (N, nz)."""
    return mean + var.sqrt() * torch.randn_like(mean)


def gaussian_kl(mean: Tensor, var: Tensor, prior_mean: Tensor, prior_var: Tensor) -> Tensor:
    """Compute KL(N(mean, var) || N(prior_mean, prior_var)) for diagonal Gaussians, summed over the last dim.

    All inputs are (N, nz), given as variances rather than log-variances, and the result is (N,).
    Per dimension: 0.5 * (log(prior_var / var) + (var + (mean - prior_mean)^2) / prior_var - 1).
    Computed in at least fp32, so bf16 autocast does not round the logarithms.
    """
    dtype = torch.promote_types(mean.dtype, torch.float32)
    mean, var, prior_mean, prior_var = (tensor.to(dtype) for tensor in (mean, var, prior_mean, prior_var))
    per_dim = 0.5 * (prior_var.log() - var.log() + (var + (mean - prior_mean).pow(2)) / prior_var - 1.0)
    return per_dim.sum(dim=-1)


def categorical_kl_to_uniform(logits: Tensor) -> Tensor:
    """Compute KL(Categorical(softmax(logits)) || Uniform(K)) = sum_k q_k log q_k + log K; logits (N, K), result (N,)."""
    log_q = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    return (log_q.exp() * log_q).sum(dim=-1) + math.log(logits.shape[-1])


def gumbel_softmax(logits: Tensor, temperature: float, hard: bool = False) -> Tensor:
    """Draw a relaxed one-hot sample softmax((logits + g) / temperature) with g ~ Gumbel(0, 1) (Jang et al. 2017).

    ``logits`` is (N, K) and so is the result. With ``hard`` the result is the one-hot argmax
    in the forward pass, with the gradient of the relaxed sample (straight-through).
    """
    # Clamping u away from 0 and 1 keeps -log(-log(u)) finite. The sample is drawn in at
    # least fp32, because in bf16 the clamp bounds and the noise lose most of their digits.
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    tiny = torch.finfo(logits.dtype).tiny
    uniform = torch.rand_like(logits).clamp(min=tiny, max=1.0 - torch.finfo(logits.dtype).eps)
    gumbel = -torch.log(-torch.log(uniform))
    soft = F.softmax((logits + gumbel) / temperature, dim=-1)
    if not hard:
        return soft
    one_hot = F.one_hot(soft.argmax(dim=-1), logits.shape[-1]).to(soft.dtype)
    return one_hot - soft.detach() + soft
