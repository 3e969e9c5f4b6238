"""Turning a language model's final hidden states into one vector per input.

VLM2Vec and E5-V take the final hidden state (after the last norm) of the last real token and
L2-normalise it. The trainer imports these same functions, so evaluation and training pool
identically.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Per row, the position of the last token whose mask is 1: ``(B, L) -> (B,)``.

    Works for left padding (the last column), right padding (``sum - 1``) and any mix, because
    it looks for the last 1 rather than counting. A row without any real token is an error the
    caller must not produce; it maps to position 0.
    """
    import torch

    mask = attention_mask.bool()
    length = mask.shape[1]
    positions = torch.arange(length, device=mask.device).expand_as(mask)
    return torch.where(mask, positions, torch.zeros_like(positions)).amax(dim=1)


def last_token_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``hidden[b, last real position of b]``: ``(B, L, H), (B, L) -> (B, H)``."""
    import torch

    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, last_token_index(attention_mask).to(hidden.device)]


def normalize(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise the last dimension in float32 (bf16 norms lose about 3 digits)."""
    import torch.nn.functional as F

    return F.normalize(x.float(), p=2, dim=-1)
