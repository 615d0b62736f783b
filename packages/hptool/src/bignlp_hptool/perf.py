"""Memory and step-time model of bignlp-train for one family, layout and GPU kind.

Memory per GPU (the worst pipeline stage), bytes, in parts (``ACCOUNTED``: those bignlp-train's
``memory`` records measure; checked against real runs to within 2%: tests/test_hptool_memory.py):
- ``params``, ``grads``, ``optimizer``, for the parameters P a stage holds on one TP rank (TP splits
  the linears and the vocabulary; norms, row-parallel biases and position embeddings are whole;
  a GPT's last stage holds a copy of the word embeddings): FSDP2 shards over DP the fp32 master
  weights (4P), the fp32 gradients (4P) and the AdamW moments (8P), in bf16 and fp32 alike; with
  more than one micro-batch per DP rank the gradient is accumulated unsharded in fp32 (4P, no_sync)
  before the one reduce-scatter. ``Layout.optimizer="allreduce"`` (the launcher's T5 Adam) shards nothing.
- ``activations``: the family spec's ``activation_bytes_per_layer`` (Korthikanti et al. 2022, 16-bit)
  for the recomputation mode, times the layers of the stage, times the micro-batches in flight: 1
  without PP, PP on the first stage under 1F1B, × (1 + (PP-1)/(PP·v)) interleaved; fp32 activations
  (the cpu kind) count double but for the 1-byte dropout masks. Outside the layers: the embeddings'
  dropout masks, the final norms' inputs and outputs (the output layer's input), T5's encoder output once.
- ``logits``: the loss keeps the fp32 log-softmax of one micro-batch's logits on the last stage (4 bytes
  per vocabulary entry per token, the vocabulary split over TP).
- not accounted (transients): ``logits_grad``, the gradient backward starts from (fp32, and the bf16
  logits' in bf16); ``gathered``, FSDP2's unsharded copies of 2 layers (current + prefetched) in the
  compute dtype; and the runtime's ``reserved`` memory (the GPU kind's figure). A fully recomputed
  layer's activations, alive while its backward runs, are in neither the model nor the records.

Step time: model FLOPs (the spec's ``flops_per_token``, plus a recomputed forward: all of a
layer's FLOPs under full recomputation, attention's s² part under selective) at
``compute_efficiency`` × peak, lowered for small matrix multiplies (work per GEMM row block
``mbs·rows·h/TP`` against the kind's ``work_half``, rows being T5's s_dec for its decoder-side work);
memory-bound vocabulary work per micro-batch (the fp32 cross entropy over the logits, the dense
embedding gradients) at the kind's ``memory_gbps``; TP adds an all-reduce per block (attention,
cross-attention, MLP) in forward and in backward of every micro-batch (one more recomputed), not
overlapped; PP adds the 1F1B bubble ``(PP-1)/v`` micro-batch times and a point-to-point send per
micro-batch and boundary; DP (FSDP2, ``optimizer="distributed"``) reduce-scatters fp32 gradients and all-gathers bf16
parameters once per step, ``dp_exposed`` of which is not hidden (the published runs show it: a
constant cost per step as nodes grow), and re-gathers the parameters in forward and backward of
every micro-batch (reshard after forward), assumed hidden behind compute (a variant that let them
bound the step fitted the GPT rows as well and missed T5 by 55%).
With ``optimizer="allreduce"`` (the NeMo launcher's T5: replicated fused Adam) the fp32 gradients
are all-reduced while the last micro-batch's backward runs; what outlasts it is exposed.
Collectives run at ``comm_efficiency`` × the link: NVLink inside a node, across nodes the GPU's own NIC (each GPU of
a node is in its own DP group).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .basecfg import ModelShape, pad_vocab
from .hardware import GPUKind

GB = 1024**3


@dataclass(frozen=True)
class PerfConstants:
    """The model's free constants, calibrated on the published GPT-3 rows only (``bignlp-hptool validate``)."""

    compute_efficiency: float = 0.64  # fraction of peak large GEMM-bound layers reach
    comm_efficiency: float = 1.0  # fraction of link bandwidth collectives reach
    dp_exposed: float = 0.975  # fraction of DP communication not hidden behind compute


@dataclass(frozen=True)
class Layout:
    """One parallel layout and batch shape (a search candidate)."""

    tp: int
    pp: int
    dp: int
    mbs: int
    gbs: int
    vp: int = 1
    sp: bool = False
    recompute: str | None = None  # None, "selective", "full" (block: act_ckpt_layers per stage)
    act_ckpt_layers: int = 0
    # "distributed": gradients and optimizer state sharded over DP (bignlp-train's FSDP2, the launcher's
    # GPT-3 distributed Adam); "allreduce": replicated Adam over all-reduced gradients (the launcher's T5)
    optimizer: str = "distributed"

    @property
    def num_micro_batches(self) -> int:
        """Micro-batches per DP rank per step."""
        return self.gbs // (self.mbs * self.dp)

    @property
    def name(self) -> str:
        rc = "sel" if self.recompute == "selective" else f"ac{self.act_ckpt_layers}"
        return (f"tp{self.tp}_pp{self.pp}" + (f"_vp{self.vp}" if self.vp > 1 else "") +
                f"_mbs{self.mbs}_{rc}" + ("_sp" if self.sp else ""))


@dataclass(frozen=True)
class Prediction:
    """What the model predicts for one layout."""

    memory_bytes: float
    memory_parts: dict
    step_time_s: float
    time_parts: dict
    tokens_per_s: float
    tflops_per_gpu: float  # model TFLOP/s per GPU

    @property
    def memory_gb(self) -> float:
        return self.memory_bytes / GB

    @property
    def accounted_memory_gb(self) -> float:
        """The parts bignlp-train's ``memory`` records measure (``ACCOUNTED``), for the measured column."""
        return sum(self.memory_parts.get(k, 0.0) for k in ACCOUNTED) / GB


def _stack_layers(shape: ModelShape, pp: int) -> list[tuple[str, int]]:
    """[(stack, layers of that stack on the stage)] for the first and the last stage."""
    if shape.family == "gpt":
        n = shape.arch.num_layers // pp
        return [("layers", n), ("layers", n)]
    a = shape.arch
    if pp == 1:
        return [("both", 0), ("both", 0)]
    enc_stages = (pp + 1) // 2
    return [("encoder", a.encoder_num_layers // enc_stages), ("decoder", a.decoder_num_layers // (pp - enc_stages))]


def _layer_params(shape: ModelShape, stack: str) -> float:
    """Parameters of one layer of ``stack`` (from the spec's count, by difference)."""
    from dataclasses import replace

    count = shape.spec.count_parameters
    a = shape.arch
    if shape.family == "gpt":
        return count(replace(a, num_layers=2)) - count(replace(a, num_layers=1))
    if stack == "encoder":
        return count(replace(a, encoder_num_layers=2)) - count(replace(a, encoder_num_layers=1))
    return count(replace(a, decoder_num_layers=2)) - count(replace(a, decoder_num_layers=1))


def _mask_bytes(shape: ModelShape, layout: Layout, stack: str, recompute: str | None) -> float:
    """The 1-byte dropout masks among a layer's activations (they do not double in fp32): one of the
    residual stream per block (attention, cross-attention, MLP), and of the attention probabilities."""
    if recompute == "full":
        return 0.0
    s_e, b, a, t = shape.seq_length, layout.mbs, shape.arch.num_attention_heads, layout.tp
    decoder = shape.family == "t5" and stack == "decoder"
    s = (shape.seq_length_dec or s_e) if decoder else s_e
    blocks = 3 if decoder else 2
    masks = blocks * s * b * shape.hidden_size / (t if layout.sp else 1)
    if recompute != "selective":
        masks += a * b * s * s / t + (a * b * s * s_e / t if decoder else 0)
    return masks


def _act_per_layer(shape: ModelShape, layout: Layout, stack: str, recompute: str | None, fp32: bool) -> float:
    """One layer's activations: the family's 16-bit formula; in fp32 every tensor but the masks doubles."""
    kw = dict(seq_length=shape.seq_length, micro_batch_size=layout.mbs, tensor_parallel_size=layout.tp,
              sequence_parallel=layout.sp, recompute=recompute)
    if shape.family == "gpt":
        half = shape.spec.activation_bytes_per_layer(shape.arch, **kw)
    else:
        half = shape.spec.activation_bytes_per_layer(shape.arch, stack=stack, seq_length_dec=shape.seq_length_dec,
                                                     **kw)
    return 2 * half - _mask_bytes(shape, layout, stack, recompute) if fp32 else half


def _stage_activations(shape: ModelShape, layout: Layout, stack: str, layers: int, fp32: bool) -> float:
    """Activations one micro-batch leaves on a stage holding ``layers`` layers of ``stack``."""
    if layout.recompute == "selective":
        return layers * _act_per_layer(shape, layout, stack, "selective", fp32)
    k = min(layout.act_ckpt_layers, layers)
    return (k * _act_per_layer(shape, layout, stack, "full", fp32)
            + (layers - k) * _act_per_layer(shape, layout, stack, None, fp32))


def _head_activations(shape: ModelShape, layout: Layout, *, first: bool, last: bool, fp32: bool) -> float:
    """What a micro-batch leaves outside the layers but the logits: the embeddings' 1-byte dropout masks
    (first stage); the final norms' inputs and outputs (the output layer's input, gathered under SP);
    T5's encoder output, which every decoder layer's cross-attention reads, once."""
    b, h, t = layout.mbs, shape.hidden_size, layout.tp
    width = 4 if fp32 else 2
    split = t if layout.sp else 1
    s_e = shape.seq_length
    s_d = shape.seq_length_dec or s_e
    out = 0.0
    if shape.family == "gpt":
        if first:
            out += s_e * b * h / split
        if last:
            out += width * s_e * b * h * (1 / split + 1)
        return out
    if first:  # the encoder: embedding mask, final norm input (its output: the encoder output, below)
        out += s_e * b * h / split + width * s_e * b * h / split
    if last:  # the decoder: embedding mask, final norm input and output; the encoder output
        out += s_d * b * h / split + width * s_d * b * h * (1 / split + 1) + width * s_e * b * h / split
    return out


ACCOUNTED = ("params", "grads", "optimizer", "activations", "logits")  # what bignlp-train's memory records count


def predict_memory(shape: ModelShape, layout: Layout, kind: GPUKind) -> tuple[float, dict]:
    """Peak bytes on the worst GPU and its parts: ``params``, ``grads``, ``optimizer``, ``activations``,
    ``logits`` (the ``ACCOUNTED`` ones, which bignlp-train's ``memory`` records measure), ``gathered``
    (FSDP's transient unsharded layers), ``logits_grad`` (the loss's input gradient at the start of
    backward) and ``reserved``."""
    a = shape.arch
    tp, pp, dp, m = layout.tp, layout.pp, layout.dp, layout.num_micro_batches
    vocab = pad_vocab(a.vocab_size, tp)
    h = a.hidden_size
    pos = h * a.max_position_embeddings  # learned position embeddings: replicated over TP
    bf16 = kind.precision == "bf16"
    fp32 = not bf16
    worst: tuple[float, dict] = (0.0, {})
    stages = _stack_layers(shape, pp)
    for idx, (stack, layers) in enumerate(stages):
        first, last = idx == 0 or pp == 1, idx == len(stages) - 1 or pp == 1
        if shape.family == "t5" and pp == 1:
            enc = _layer_params(shape, "encoder")
            dec = _layer_params(shape, "decoder")
            layer_params = a.encoder_num_layers * enc + a.decoder_num_layers * dec
            biggest_layer = max(enc, dec)
            replicated = (2 * a.encoder_num_layers + 3 * a.decoder_num_layers) * 3 * h
            act = (_stage_activations(shape, layout, "encoder", a.encoder_num_layers, fp32)
                   + _stage_activations(shape, layout, "decoder", a.decoder_num_layers, fp32))
        else:
            per = _layer_params(shape, stack)
            layer_params, biggest_layer = layers * per, per
            replicated = layers * (3 if stack == "decoder" else 2) * 3 * h
            act = _stage_activations(shape, layout, stack, layers, fp32)
        # TP splits the linears and the vocabulary; each block's norm (gain, bias) and row-parallel bias are whole.
        # A GPT's last stage holds a copy of the word embeddings; T5's encoder and decoder stages their own.
        if shape.family == "gpt":
            embeddings = (vocab * h / tp + pos if first else 0) + (vocab * h / tp if last and not first else 0)
        else:
            embeddings = (first + last) * (vocab * h / tp + pos) if pp > 1 else vocab * h / tp + 2 * pos
        params = (layer_params - replicated) / tp + replicated + embeddings
        # fp32 master weights, gradients and AdamW's two moments, sharded over DP by FSDP2
        shards = dp if layout.optimizer == "distributed" else 1
        parts = {"params": 4 * params / shards, "grads": 4 * params / shards, "optimizer": 8 * params / shards}
        if m > 1 and shards > 1:
            parts["grads"] = 4 * params  # no_sync: the unsharded fp32 gradient accumulates before the reduce-scatter
        if pp > 1:
            in_flight = min(m, pp) if idx == 0 else 1  # 1F1B: the first stage holds PP micro-batches
            if layout.vp > 1 and idx == 0:
                in_flight *= 1 + (pp - 1) / (pp * layout.vp)
        else:
            in_flight = 1
        if pp > 1 and shape.family == "gpt":
            act += _head_activations(shape, layout, first=idx == 0, last=False, fp32=fp32)
            act = act * in_flight + _head_activations(shape, layout, first=False, last=last, fp32=fp32)
        else:
            act = act * in_flight + _head_activations(shape, layout, first=first, last=last, fp32=fp32)
        s_out = shape.seq_length_dec or shape.seq_length
        entries = layout.mbs * s_out * vocab / tp if last else 0.0
        sharded = shards > 1 or bf16  # FSDP2 (bf16 runs use it on one rank too)
        # the loss keeps its fp32 log-softmax; backward starts from its gradient (fp32) and, in bf16, the logits'
        parts.update(activations=act, logits=4 * entries, logits_grad=(6 if bf16 else 4) * entries,
                     gathered=(2 if bf16 else 4) * 2 * biggest_layer / tp if sharded else 0.0,
                     reserved=kind.reserved_gb * GB)
        total = sum(parts.values())
        if total > worst[0]:
            worst = (total, parts)
    return worst


def _ring(bytes_: float, n: int, bw: float) -> float:
    """Seconds of an all-gather/reduce-scatter of ``bytes_`` (the whole buffer) over ``n`` ranks at ``bw`` B/s."""
    return 0.0 if n <= 1 else bytes_ * (n - 1) / n / bw


# Bytes of memory-bound traffic per logit entry and micro-batch: Megatron's vocabulary-parallel cross
# entropy on fp32 logits reads and writes the (tokens × vocab/TP) logits about a dozen times in forward
# and backward (the bias add, the cast to fp32, max, subtract, exp, sum, normalise; scale by the incoming
# gradient, cast back), ~4 bytes each.
LOGIT_BYTES = 48.0
# Bytes per embedding entry and use, per micro-batch: a dense (vocab/TP × h) gradient is written in bf16
# and accumulated into the fp32 gradient (read bf16, read and write fp32).
EMBEDDING_GRAD_BYTES = 12.0


def _row_parts(shape: ModelShape) -> list[tuple[float, int]]:
    """(FLOPs per sample, rows per sample its matrix multiplies run over): T5's decoder-side work runs on
    s_dec rows, a quarter of the encoder's at the seed's 512/128."""
    if shape.family == "gpt":
        return [(shape.flops_per_token() * shape.seq_length, shape.seq_length)]
    from bignlp_models.t5 import flops_per_sample

    enc, dec = flops_per_sample(shape.arch, shape.seq_length, shape.seq_length_dec)
    return [(enc, shape.seq_length), (dec, shape.seq_length_dec or shape.seq_length)]


def _vocab_traffic_s(shape: ModelShape, layout: Layout, kind: GPUKind) -> float:
    """Seconds of memory-bound vocabulary work per micro-batch: the cross entropy over the logits and the
    dense embedding gradients (GPT: input embedding and tied head; T5: encoder and decoder inputs, head)."""
    vocab = pad_vocab(shape.arch.vocab_size, layout.tp) / layout.tp
    s_out = shape.seq_length_dec or shape.seq_length
    uses = 2 if shape.family == "gpt" else 3
    bytes_ = LOGIT_BYTES * layout.mbs * s_out * vocab + EMBEDDING_GRAD_BYTES * uses * vocab * shape.hidden_size
    return bytes_ / (kind.memory_gbps * 1e9)


def predict_step_time(shape: ModelShape, layout: Layout, kind: GPUKind, *, gpus_per_node: int,
                      constants: PerfConstants = PerfConstants()) -> tuple[float, dict]:
    """Seconds per optimizer step and their parts (``compute``, ``vocab``, ``tp``, ``bubble``, ``p2p``, ``dp``)."""
    a = shape.arch
    tp, pp, dp, m = layout.tp, layout.pp, layout.dp, layout.num_micro_batches
    h = a.hidden_size
    s = shape.seq_length
    tokens_mb = layout.mbs * s
    flops_token = shape.flops_per_token()
    # a recomputed forward: all FLOPs of the recomputed layers (1/3 of their 6), attention's s² part under selective
    if layout.recompute == "selective":
        heads_dim = a.num_attention_heads * a.kv_channels
        extra = 4.0 * heads_dim * s * (shape.num_layers if shape.family == "gpt" else a.encoder_num_layers)
    elif layout.act_ckpt_layers > 0:
        layers_stage = max(1, shape.num_layers // pp)
        extra = flops_token / 3 * min(1.0, layout.act_ckpt_layers / layers_stage)
    else:
        extra = 0.0
    peak = kind.peak_tflops * 1e12

    def rate(rows: int) -> float:  # FLOP/s of matrix multiplies over ``rows`` rows of width h/TP
        work = layout.mbs * rows * h / tp
        return peak * constants.compute_efficiency * work / (work + kind.work_half)

    parts = _row_parts(shape)
    t_compute_mb = (sum(f * layout.mbs / rate(rows) for f, rows in parts)
                    + extra * tokens_mb / rate(parts[0][1])) / (tp * pp)
    t_vocab_mb = _vocab_traffic_s(shape, layout, kind)
    # TP: per block (attention, cross-attention, MLP) one all-reduce forward, one backward, one more recomputed
    blocks = 2 * a.num_layers if shape.family == "gpt" else a.encoder_num_layers * 2 + a.decoder_num_layers * 3
    blocks_stage = blocks / pp
    per_block = 3 if layout.act_ckpt_layers > 0 else 2
    tp_bw = (kind.intra_node_gbps if tp <= gpus_per_node else kind.inter_node_gbps) * 1e9 * constants.comm_efficiency
    ar_bytes = 2.0 * tokens_mb * h
    t_tp_mb = 0.0 if tp == 1 else blocks_stage * per_block * 2 * _ring(ar_bytes, tp, tp_bw)
    t_mb = t_compute_mb + t_vocab_mb + t_tp_mb
    bubble = (pp - 1) / layout.vp * t_mb
    link = kind.intra_node_gbps if tp * pp <= gpus_per_node else kind.inter_node_gbps
    p2p = 0.0 if pp == 1 else m * layout.vp * 2 * (2.0 * tokens_mb * h / (tp if layout.sp else 1)) / (
        link * 1e9 * constants.comm_efficiency)
    t_pipe = m * t_mb + bubble + p2p
    params_stage = (shape.num_parameters / pp) / tp
    per_node = max(1, gpus_per_node // (tp * pp))  # ranks of one DP group on a node
    group_nodes = math.ceil(dp / per_node)
    dp_bw = kind.intra_node_gbps if group_nodes <= 1 else kind.inter_node_gbps  # every GPU drives its own NIC
    dp_bw *= 1e9 * constants.comm_efficiency
    if layout.optimizer == "distributed":
        # FSDP2 / distributed Adam: once per step a reduce-scatter of fp32 gradients and an all-gather of bf16
        # parameters (exposed: dp_exposed of it), and the re-gathers in every micro-batch's forward and
        # backward (hidden behind compute)
        t_dp = constants.dp_exposed * _ring(6.0 * params_stage, dp, dp_bw)
        t_dp_overlapped = _ring(4.0 * params_stage * m, dp, dp_bw)
    else:
        # unsharded Adam (the NeMo launcher's T5/mT5 "fused_adam" with O2): the fp32 gradients are all-reduced
        # bucket by bucket while the last micro-batch's backward (2/3 of its compute) still runs
        t_allreduce = 2 * _ring(4.0 * params_stage, dp, dp_bw)
        t_dp = max(0.0, t_allreduce - 2 / 3 * t_compute_mb)
        t_dp_overlapped = t_allreduce - t_dp
    step = t_pipe + t_dp
    return step, {"compute": m * t_compute_mb, "vocab": m * t_vocab_mb, "tp": m * t_tp_mb, "bubble": bubble,
                  "p2p": p2p, "dp_exposed": t_dp, "dp_overlapped": t_dp_overlapped}


def predict(shape: ModelShape, layout: Layout, kind: GPUKind, *, gpus_per_node: int,
            constants: PerfConstants = PerfConstants()) -> Prediction:
    """Memory and step time of ``layout`` (the search's and ``validate``'s entry point)."""
    mem, mem_parts = predict_memory(shape, layout, kind)
    step, time_parts = predict_step_time(shape, layout, kind, gpus_per_node=gpus_per_node, constants=constants)
    tokens = layout.gbs * shape.seq_length / step
    num_gpus = layout.tp * layout.pp * layout.dp
    return Prediction(memory_bytes=mem, memory_parts=mem_parts, step_time_s=step, time_parts=time_parts,
                      tokens_per_s=tokens, tflops_per_gpu=tokens * shape.flops_per_token() / num_gpus / 1e12)
