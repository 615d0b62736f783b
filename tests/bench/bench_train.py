"""Benchmark: bignlp-train's GPT on CPU — step speed, activation memory, model FLOPs.

1. speed: tokens/s of one training step (forward + backward + grad clip + AdamW) of a 21M-parameter
   GPT against Hugging Face transformers' ``GPT2LMHeadModel`` of the same shape (layers, hidden,
   heads, vocabulary, sequence, learned positions, tied embeddings, tanh GeLU, SDPA attention),
   same batch, same thread count, same AdamW groups, fp32, dropout 0.1 in both. Warm-up steps,
   then timed steps alternating between the two models; medians. Target: ratio ours/HF >= 1.0.
2. memory: bytes saved for backward by one transformer layer (``saved_tensors_hooks``, unique
   storages, weights left out, plus the inputs a checkpoint keeps), the model built as the trainer
   builds it for bf16 (FSDP2 bf16 compute) with dropout on, against Korthikanti et al. 2022
   (Table 2), for recompute none / selective / full, one process and TP=2 (± SP) over 2 gloo
   processes (per rank). Target: within 10%; a case that misses prints its tensors by shape, dtype
   and producing op (``--verbose``: every case's).
3. flops: the model FLOPs per token the trainer uses (``flops_per_token`` of the config's
   architecture) against 6·N + 12·L·h·s counted here from the built model's parameters.
   Target: equal.

    python tests/bench/bench_train.py [--only speed|memory|flops] [--threads 2] [--steps 8]

``bench_train_t5.py`` measures the same for T5 through the helpers here (``compare_steps``,
``measure_layer``, ``run_memory_cases``, ``print_layer_case``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.utils.checkpoint

from bignlp_models import GPT_SPEC, GPTConfig, build_model, lm_loss, num_parameters
from bignlp_models.gpt import flops_per_token
from bignlp_train.parallelize import build_model_parts, clip_grad_norm_
from bignlp_train.recompute import Recompute

# ~21M parameters: 10 layers, hidden 384, 6 heads of 64, an 8k vocabulary, 256 tokens
SPEED = dict(vocab_size=8192, max_position_embeddings=256, num_layers=10, hidden_size=384, num_attention_heads=6,
             ffn_hidden_size=1536, kv_channels=64, hidden_dropout=0.1, attention_dropout=0.1)
BATCH = 4
RECOMPUTE = {"none": Recompute(), "selective": Recompute("selective"), "full": Recompute("full", "uniform", 1)}


def adamw(model: torch.nn.Module) -> torch.optim.AdamW:
    """The trainer's AdamW groups (decay for matrices only), foreach path, as ``optim.build_optimizer``."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                             lr=1e-4, betas=(0.9, 0.95))


def hf_gpt2(cfg: GPTConfig) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging

    logging.set_verbosity_error()
    hf_cfg = GPT2Config(n_layer=cfg.num_layers, n_embd=cfg.hidden_size, n_head=cfg.num_attention_heads,
                        n_inner=cfg.ffn_hidden_size, vocab_size=cfg.vocab_size,
                        n_positions=cfg.max_position_embeddings, activation_function="gelu_new",  # tanh GeLU
                        resid_pdrop=cfg.hidden_dropout, embd_pdrop=cfg.hidden_dropout,
                        attn_pdrop=cfg.attention_dropout, layer_norm_epsilon=cfg.layernorm_epsilon,
                        initializer_range=cfg.init_method_std, tie_word_embeddings=True, bos_token_id=0,
                        eos_token_id=0, attn_implementation="sdpa")
    model = GPT2LMHeadModel(hf_cfg)
    assert model.config._attn_implementation == "sdpa", model.config._attn_implementation
    return model


def bench_speed(args) -> None:
    cfg = GPTConfig(**SPEED)
    seq = cfg.max_position_embeddings
    torch.manual_seed(0)
    ours, hf = build_model(cfg).train(), hf_gpt2(cfg).train()
    n_ours, n_hf = num_parameters(ours), sum(p.numel() for p in hf.parameters())
    opt_ours, opt_hf = adamw(ours), adamw(hf)
    tokens = torch.randint(0, cfg.vocab_size, (BATCH, seq + 1))
    inputs, labels = tokens[:, :-1], tokens[:, 1:]
    positions = torch.arange(seq).unsqueeze(0).expand(BATCH, seq)
    loss_mask = torch.ones(BATCH, seq)

    def step_ours() -> None:  # trainer.train_step's work for one micro-batch
        lm_loss(ours(inputs, positions), labels, loss_mask).backward()
        clip_grad_norm_(ours.parameters(), 1.0)
        opt_ours.step()
        opt_ours.zero_grad(set_to_none=True)

    def step_hf() -> None:  # the usual HF loop: the model's own shifted LM loss
        hf(input_ids=inputs, labels=inputs).loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        opt_hf.step()
        opt_hf.zero_grad(set_to_none=True)

    print(f"== speed: training step, fp32, {torch.get_num_threads()} threads, batch {BATCH} x {seq} tokens, "
          f"{cfg.num_layers} layers, hidden {cfg.hidden_size}, {cfg.num_attention_heads} heads, vocab "
          f"{cfg.vocab_size}, dropout {cfg.hidden_dropout}; parameters ours {n_ours:,} / HF {n_hf:,}")
    compare_steps(step_ours, step_hf, tokens=BATCH * seq, args=args, names=("bignlp-train GPT", "HF GPT2LMHeadModel"))


def compare_steps(step_ours: Callable[[], None], step_hf: Callable[[], None], *, tokens: int, args,
                  names: tuple[str, str]) -> None:
    """Warm both up, time ``args.steps`` alternating steps of each, print tokens/s medians and their ratio.

    Alternating, so both see the same machine load; ``tokens``: what one step trains on.
    """
    for _ in range(args.warmup):
        step_ours()
        step_hf()
    times: dict[str, list[float]] = {"ours": [], "hf": []}
    for _ in range(args.steps):
        for name, step in (("ours", step_ours), ("hf", step_hf)):
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    ours_tps, hf_tps = tokens / statistics.median(times["ours"]), tokens / statistics.median(times["hf"])
    ours_best, hf_best = tokens / min(times["ours"]), tokens / min(times["hf"])
    print(f"{names[1]} {hf_tps:8.0f} tok/s | {names[0]} {ours_tps:8.0f} tok/s | "
          f"ratio {ours_tps / hf_tps:.2f} (target >= 1.00)  [median of {args.steps} alternating steps after "
          f"{args.warmup} warm-up]")
    spread = max(times["ours"] + times["hf"]) / min(times["ours"] + times["hf"])
    print(f"  fastest step: HF {hf_best:.0f} tok/s, ours {ours_best:.0f} tok/s, ratio {ours_best / hf_best:.2f}; "
          f"slowest/fastest step {spread:.1f}x{' (a busy machine: rerun when idle)' if spread > 1.5 else ''}")


# ---------------------------------------------------------------- activation memory


def _local(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return t._local_tensor if isinstance(t, DTensor) else t


def _weight_storages(module: torch.nn.Module) -> set[int]:
    return {_local(p).untyped_storage().data_ptr() for p in module.parameters()}


def measure_layer(layer: torch.nn.Module, forward: Callable[[], object]) -> tuple[int, list[dict]]:
    """Bytes ``layer`` keeps for backward while ``forward()`` runs the model: unique storages saved by
    autograd or held by a checkpoint.

    Returns (total bytes, one record per storage). Weights are not activations: the parameters as
    the layer's forward sees them (FSDP's gathered bf16 copies, read when the layer starts) and any
    transpose or view of them are left out. The layer's inputs after the first (an encoder output a
    decoder layer attends to, attention masks) are one tensor for the whole stack: recorded as
    "per-stack input" and left out of the total (the first input, the residual stream, is the layer's).
    """
    weights: set[int] = set()
    per_stack: set[int] = set()
    recording = [False]
    kept: dict[int, dict] = {}

    def note(t: torch.Tensor, how: str) -> None:
        local = _local(t)
        storage = local.untyped_storage()
        if storage.data_ptr() in kept or storage.data_ptr() in weights:
            return
        producer = type(t.grad_fn).__name__ if t.grad_fn is not None else "-"
        kept[storage.data_ptr()] = dict(bytes=storage.nbytes(), shape=tuple(local.shape), dtype=str(local.dtype)[6:],
                                        producer=producer,
                                        how="per-stack input" if storage.data_ptr() in per_stack else how)

    def pack(t: torch.Tensor) -> torch.Tensor:
        if recording[0]:
            note(t, "saved")
        return t

    original = torch.utils.checkpoint.checkpoint

    def checkpoint(fn, *args, **kwargs):  # a non-reentrant checkpoint keeps its inputs alive, nothing else
        if recording[0]:
            for a in [*args, *kwargs.values()]:
                if isinstance(a, torch.Tensor):
                    note(a, "checkpoint input")
        return original(fn, *args, **kwargs)

    def start(module, args, kwargs) -> None:  # FSDP's pre-forward hook (registered first) has gathered the weights
        weights.update(_weight_storages(module))
        per_stack.update(_local(a).untyped_storage().data_ptr() for a in [*args[1:], *kwargs.values()]
                         if isinstance(a, torch.Tensor))
        recording[0] = True

    hooks = [layer.register_forward_pre_hook(start, with_kwargs=True),
             layer.register_forward_hook(lambda *_: recording.__setitem__(0, False))]
    torch.utils.checkpoint.checkpoint = checkpoint
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = forward()
    finally:
        torch.utils.checkpoint.checkpoint = original
        for h in hooks:
            h.remove()
    del out
    records = sorted(kept.values(), key=lambda r: -r["bytes"])
    return sum(r["bytes"] for r in records if r["how"] != "per-stack input"), records


def check_checkpoint_seen(case: str, records: list[dict]) -> None:
    """Exit when a recompute case kept no checkpoint input: the bench would count the wrong thing."""
    if case != "none" and not any(r["how"] == "checkpoint input" for r in records):
        sys.exit(f"recompute {case}: no checkpoint was seen (does parallelize.py still call "
                 "torch.utils.checkpoint.checkpoint?); this bench cannot count what it keeps")


def init_one_process() -> None:
    """One process as the trainer runs it: a ("pp", "dp", "tp") mesh of one rank each."""
    from bignlp_contracts import RunEnv
    from bignlp_train.runtime import init_distributed

    init_distributed(RunEnv(), torch.device("cpu"), 1, one_process_mesh=True)


def memory_worker(out_dir: str, cases: Callable[[int, bool], list[dict]]) -> None:
    """One rank of a TP=2 memory measurement (started by ``run_memory_cases``): ``cases`` without, then with SP."""
    from bignlp_contracts import discover_run_env
    from bignlp_train.runtime import init_distributed, shutdown_distributed

    env = discover_run_env()
    torch.set_num_threads(1)
    init_distributed(env, torch.device("cpu"), 2)
    try:
        results = cases(2, False) + cases(2, True)
    finally:
        shutdown_distributed()
    Path(out_dir, f"rank{env.rank}.json").write_text(json.dumps(results))


def run_memory_cases(cases: Callable[[int, bool], list[dict]], script: str) -> list[dict]:
    """``cases(tp, sp)`` on one process, then at TP=2 without and with SP over 2 gloo processes running
    ``script --memory-worker DIR`` (which calls ``memory_worker``); rank 0's results, noting where ranks differ."""
    from bignlp_train.launch import launch_local
    from bignlp_train.runtime import shutdown_distributed

    init_one_process()
    try:
        results = cases(1, False)
    finally:
        shutdown_distributed()
    with tempfile.TemporaryDirectory(prefix="bignlp-bench-") as tmp:
        code = launch_local([sys.executable, script, "--memory-worker", tmp], 2)
        if code != 0:
            sys.exit(f"the TP=2 memory workers failed with exit code {code}")
        ranks = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(2)]
    for r0, r1 in zip(*ranks):
        if r0["bytes"] != r1["bytes"]:
            print(f"  note: ranks differ for {r0['case']} tp={r0['tp']} sp={r0['sp']}: {r0['bytes']} vs {r1['bytes']}")
        results.append(r0)
    return results


def layout_name(tp: int, sp: bool) -> str:
    return "1 process" if tp == 1 else f"TP={tp}{'+SP' if sp else ''} (per rank)"


def print_layer_case(label: str, measured: int, want: float, unit: int, *, verbose: bool,
                     records: list[dict]) -> bool:
    """One case's line (MiB and units of ``unit`` elements, "sbh"), its tensors when it misses or ``verbose``;
    True when on target (within 10%)."""
    ratio = measured / want
    ok = abs(ratio - 1) <= 0.10
    print(f"{label} measured {measured / 2**20:7.2f} MiB ({measured / unit:6.2f} sbh) | formula {want / 2**20:7.2f} "
          f"MiB ({want / unit:6.2f} sbh) | ratio {ratio:.2f} {'ok' if ok else 'MISS'} (target 0.90-1.10)")
    if not ok or verbose:
        for rec in records:
            print(f"    {rec['bytes'] / unit:6.2f} sbh  {str(list(rec['shape'])):18s} {rec['dtype']:9s} "
                  f"{rec['how']:16s} from {rec['producer']}")
    return ok


def memory_cfg() -> GPTConfig:
    return GPTConfig(**{**SPEED, "num_layers": 3})


def memory_cases(tp: int, sp: bool) -> list[dict]:
    """Measure every recompute setting on this process (a rank of a TP group when tp > 1).

    The model is built as the trainer builds it for ``trainer.precision=bf16``: on a ("pp", "dp",
    "tp") mesh (one rank per dim but "tp" here), FSDP2 gathering the fp32 master weights in bf16.
    """
    from torch.distributed.device_mesh import init_device_mesh

    cfg = memory_cfg()
    mesh = init_device_mesh("cpu", (1, 1, tp), mesh_dim_names=("pp", "dp", "tp"))
    results = []
    for case in RECOMPUTE:
        torch.manual_seed(0)
        model = build_model_parts(GPT_SPEC, cfg, torch.device("cpu"), mesh, sequence_parallel=sp,
                                  recompute=RECOMPUTE[case], param_dtype=torch.bfloat16)[0]
        model.train()
        tokens = torch.randint(0, cfg.vocab_size, (BATCH, cfg.max_position_embeddings))
        total, records = measure_layer(model.layers["1"], functools.partial(model, tokens))
        check_checkpoint_seen(case, records)
        results.append(dict(case=case, tp=tp, sp=sp, bytes=total, records=records))
    # The logits this rank materialises: vocabulary-parallel under TP, so 1/t of b·s·V.
    with torch.no_grad():
        logits = model(tokens)
    local = logits.to_local() if hasattr(logits, "to_local") else logits
    results.append(dict(case="logits", tp=tp, sp=sp, bytes=local.numel() * local.element_size(), records=[]))
    return results


def bench_memory(args) -> None:
    cfg = memory_cfg()
    s, b, h, a = cfg.max_position_embeddings, BATCH, cfg.hidden_size, cfg.num_attention_heads
    print(f"== memory: bytes saved for backward by one transformer layer, trainer.precision=bf16 (FSDP2 bf16 "
          f"compute, no autocast), dropout {cfg.hidden_dropout}/{cfg.attention_dropout}; s={s} b={b} h={h} a={a} "
          f"(sbh = {s * b * h:,} elements)")
    results = run_memory_cases(memory_cases, __file__)
    sbh = s * b * h
    missed = []
    logit_rows = [r for r in results if r["case"] == "logits"]
    for r in logit_rows:
        t = r["tp"]
        want = b * s * cfg.vocab_size * 2 / t  # bf16 logits of this rank's vocabulary slice
        layout = layout_name(t, r["sp"])
        ok = "ok" if r["bytes"] == want else "MISS"
        print(f"logits    {layout:20s} measured {r['bytes'] / 2**20:7.2f} MiB | b·s·V·2/t {want / 2**20:7.2f} MiB | "
              f"ratio to 1 process {r['bytes'] / (b * s * cfg.vocab_size * 2):.2f} {ok} (target 1/t)")
        if ok == "MISS":
            missed.append(f"logits {layout}")
    results = [r for r in results if r["case"] != "logits"]
    for r in results:
        # the family spec's formula (Korthikanti et al. 2022, Table 2), which the HP tool plans with
        want = GPT_SPEC.activation_bytes_per_layer(cfg, seq_length=s, micro_batch_size=b, tensor_parallel_size=r["tp"],
                                                   sequence_parallel=r["sp"],
                                                   recompute=None if r["case"] == "none" else r["case"])
        layout = layout_name(r["tp"], r["sp"])
        if not print_layer_case(f"{r['case']:9s} {layout:20s}", r["bytes"], want, sbh, verbose=args.verbose,
                                records=r["records"]):
            missed.append(f"{r['case']} {layout}")
    total = len(results) + len(logit_rows)
    print(f"{total - len(missed)} of {total} cases on target (activations within 10% of the formula, logits 1/t)"
          + (f"; outside: {', '.join(missed)} (their tensors are listed under each)" if missed else ""))


# ---------------------------------------------------------------- model FLOPs


def bench_flops(args) -> None:
    from bignlp_models import GPT
    from bignlp_train.config import load_train_config

    print("== flops: model FLOPs per token, trainer (flops_per_token of the config's architecture) vs "
          "6·N + 12·L·h·s counted here")
    print("   N = the built model's parameters minus position embeddings, biases and LayerNorms (the weights a "
          "token is multiplied by; the tied token embedding counted once, as the output layer)")
    for name in ["gpt3/tiny-cpu", "gpt3/126m", "gpt3/5b", "gpt3/20b", "gpt3/40b", "gpt3/175b"]:
        cfg = load_train_config(name)
        arch = cfg.model.architecture(50257)  # GPT-2 BPE, padded as the trainer pads it
        seq = cfg.model.seq_length  # what the trainer passes to flops_per_token
        with torch.device("meta"):  # shapes only: no memory even for 175B
            model = GPT(arch)
        total = sum(p.numel() for p in model.parameters())
        n = sum(p.numel() for name_, p in model.named_parameters()
                if p.ndim == 2 and name_ != "embedding.position_embeddings.weight")
        independent = 6 * n + 12 * arch.num_layers * arch.hidden_size * seq
        reported = flops_per_token(arch, seq)
        same = "equal" if reported == independent else "DIFFERENT"
        print(f"{name:14s} params {total / 1e6:10.1f}M  N {n / 1e6:10.1f}M  s {seq:5d} | trainer {reported:.6e} | "
              f"6N+12Lhs {independent:.6e} | {same} (target equal)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["speed", "memory", "flops"])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="torch threads for the speed bench")
    ap.add_argument("--steps", type=int, default=int(os.environ.get("BENCH_STEPS", 8)), help="timed steps per model")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per model first")
    ap.add_argument("--verbose", action="store_true", help="print every memory case's tensors, not just misses")
    ap.add_argument("--memory-worker", metavar="DIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    if args.memory_worker:
        memory_worker(args.memory_worker, memory_cases)
        return
    torch.set_num_threads(args.threads)
    for name, run in (("flops", bench_flops), ("memory", bench_memory), ("speed", bench_speed)):
        if args.only in (None, name):
            run(args)


if __name__ == "__main__":
    main()
