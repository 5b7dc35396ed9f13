"""A torch Circle loss with one mistake: the anchor is left in its own positive set.

  python -m circle_jax.verify docs/verify_examples/self_pair_kept.py:circle_loss --framework torch
"""

import torch
import torch.nn.functional as F


def circle_loss(embeddings, labels, *, margin, gamma):
  e = F.normalize(embeddings, dim=1)
  s = e @ e.t()
  same = labels[:, None] == labels[None, :]  # the diagonal should be removed here
  alpha_p = (1 + margin - s.detach()).clamp_min(0)
  alpha_n = (s.detach() + margin).clamp_min(0)
  lp = -gamma * alpha_p * (s - (1 - margin))
  ln = gamma * alpha_n * (s - margin)
  lse_p = torch.logsumexp(lp.masked_fill(~same, -torch.inf), 1)
  lse_n = torch.logsumexp(ln.masked_fill(same, -torch.inf), 1)
  valid = (~same).any(1)
  return torch.where(valid, F.softplus(torch.where(valid, lse_p + lse_n, 0.0)), 0.0).mean()
