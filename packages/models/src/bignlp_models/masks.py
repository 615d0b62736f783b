"""Attention masks built from token ids."""

from __future__ import annotations

import torch


def document_causal_mask(tokens: torch.Tensor, eod_id: int) -> torch.Tensor:
    """(batch, 1, seq, seq) boolean mask: causal, and no attention across an EOD (reset_attention_mask).

    As Megatron: the EOD token still belongs to the document it ends. True = may attend.
    """
    is_eod = (tokens == eod_id).long()
    doc = torch.cumsum(is_eod, dim=1) - is_eod  # document index of each position
    seq = tokens.shape[1]
    causal = torch.ones(seq, seq, dtype=torch.bool, device=tokens.device).tril()
    same_doc = doc.unsqueeze(2) == doc.unsqueeze(1)
    return (causal & same_doc).unsqueeze(1)
