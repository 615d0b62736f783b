"""Run by test_models_tensor_parallel.py as one rank of a gloo TP group: a checkpoint sharded with
``load_model_tp``, greedy and sampled generation, and the first step's logits, written to ``OUT.rank<r>.pt``.

Arguments: CHECKPOINT OUT. The group comes from MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

from bignlp_models import generate
from bignlp_models.generate import decoding_for
from bignlp_models.tensor_parallel import load_model_tp

PROMPTS = [[464, 3290, 318], [15496], [40, 1101, 257, 2068, 11, 290]]
MAX_NEW = 10


def main() -> None:
    checkpoint, out = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    mesh = init_device_mesh("cpu", (dist.get_world_size(),), mesh_dim_names=("tp",))
    loaded = load_model_tp(checkpoint, mesh["tp"])
    start = None if loaded.family.name == "gpt" else 0
    greedy = generate(loaded.model, PROMPTS, max_new_tokens=MAX_NEW, greedy=True, decoder_start_token_id=start)
    sampled = generate(loaded.model, PROMPTS, max_new_tokens=MAX_NEW, top_k=20, temperature=0.8, seed=7,
                       decoder_start_token_id=start)
    decoding = decoding_for(loaded.model, decoder_start_token_id=start)
    tokens, mask = decoding.batch(PROMPTS, max_new_tokens=MAX_NEW, pad_id=0, vocab_size=loaded.vocab_size,
                                  device=torch.device("cpu"))
    with torch.inference_mode():
        logits = decoding.start(tokens, mask, max_new_tokens=MAX_NEW).full_tensor()
    dtypes = {str(p.dtype) for p in load_model_tp(checkpoint, mesh["tp"], dtype=torch.bfloat16).model.parameters()}
    torch.save({"greedy": greedy.tokens, "bf16_dtypes": dtypes, "sampled": sampled.tokens,
                "logits": logits[:, :loaded.vocab_size],
                "model_vocab": loaded.model.cfg.vocab_size, "vocab": loaded.vocab_size},
               f"{out}.rank{dist.get_rank()}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
