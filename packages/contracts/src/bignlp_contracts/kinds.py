"""The artifact kinds stages hand each other, and what each must contain.

A kind's ``kind_version`` changes whenever its layout changes incompatibly;
consumers state which versions they read. ``required_files`` are paths relative
to the artifact directory that must exist in addition to whatever the manifest's
``files`` table lists; ``produced_by`` tells a user how to make one.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ArtifactError


@dataclass(frozen=True)
class ArtifactKind:
    """A named, versioned artifact layout."""

    name: str
    kind_version: int
    description: str
    produced_by: str
    required_files: tuple[str, ...] = ()


MEGATRON_DATASET = ArtifactKind(
    name="megatron-dataset",
    kind_version=1,
    description=(
        "Tokenized corpus in Megatron .bin/.idx format, one <prefix>_<json_key>_document pair per "
        "JSON key, plus the tokenizer files under tokenizer/. summary.datasets lists the prefixes; "
        "summary.tokenizer describes the tokenizer (type, files, vocab_size, eod_id)."
    ),
    produced_by="bignlp-dataprep preprocess --input FILE --output-prefix DIR/NAME ... (or: bignlp-dataprep run)",
)

MODEL_CHECKPOINT = ArtifactKind(
    name="model-checkpoint",
    kind_version=1,
    description=(
        "One training checkpoint of any model family: a torch.distributed.checkpoint directory dcp/ "
        "(model weights under model.*, optimizer, data position, RNG), the resolved training config as "
        "config.yaml and the tokenizer files under tokenizer/. summary.family names the family "
        "(\"gpt\"), summary.model its architecture (the family's config: padded vocab_size, layers, "
        "widths), summary.vocab_size the tokenizer's unpadded vocabulary and summary.tokenizer the "
        "tokenizer (type, files under tokenizer/, vocab_size, eod_id)."
    ),
    produced_by="bignlp-train pretrain --config gpt3/tiny-cpu model.data.data_prefix=[1.0,DIR/NAME_text_document]",
    required_files=("config.yaml", "dcp/.metadata"),
)

# Legacy: what bignlp-train 0.5.0 wrote (a GPT, no summary.family). Still read; no longer written.
GPT_CHECKPOINT = ArtifactKind(
    name="gpt-checkpoint",
    kind_version=1,
    description=(
        "Legacy (bignlp-train 0.5.0) GPT training checkpoint, read as a model-checkpoint of family gpt: "
        "a torch.distributed.checkpoint directory (model, optimizer, scheduler, data position, RNG), the "
        "resolved training config as config.yaml and the tokenizer files under tokenizer/."
    ),
    produced_by=MODEL_CHECKPOINT.produced_by,
    required_files=("config.yaml", "dcp/.metadata"),
)

# The kinds a model checkpoint may have, newest first (read_checkpoint accepts each).
CHECKPOINT_KINDS: tuple[ArtifactKind, ...] = (MODEL_CHECKPOINT, GPT_CHECKPOINT)

CSP_VALIDATION = ArtifactKind(
    name="csp-validation",
    kind_version=1,
    description=(
        "A cluster validation run: result.json (GPU diagnostics per node, collective bus bandwidth per "
        "message size, node-pair figures, the nodes that failed), report.txt and busbw.png. "
        "summary.passed says whether the cluster passed; summary.failed_nodes names the nodes to replace."
    ),
    produced_by="bignlp-csp-validate run --nodes N --nodelist LIST --partition P --output-dir DIR",
    required_files=("result.json",),
)

NEMO_ARCHIVE = ArtifactKind(
    name="nemo-archive",
    kind_version=1,
    description=(
        "A NeMo 1.x .nemo archive (an uncompressed tar: model_config.yaml, model_weights.ckpt or one "
        "mp_rank_XX/ or tp_rank_XX_pp_rank_XXX/ directory per model-parallel rank, tokenizer files as "
        "{uuid}_{name} referenced by nemo: paths) in the artifact directory, which holds nothing else. "
        "summary.nemo_file names it; summary.family, summary.model and summary.tokenizer describe the model "
        "(as a model-checkpoint's), summary.tensor_model_parallel_size and "
        "summary.pipeline_model_parallel_size its layout."
    ),
    produced_by="bignlp-convert to-nemo --checkpoint RUN_DIR --output DIR/megatron_gpt.nemo",
)

HF_MODEL = ArtifactKind(
    name="hf-model",
    kind_version=1,
    description=(
        "A Hugging Face model directory that transformers' from_pretrained loads: config.json, "
        "generation_config.json, model.safetensors (or model-NNNNN-of-NNNNN.safetensors shards and "
        "model.safetensors.index.json) and tokenizer files AutoTokenizer loads. summary.family and "
        "summary.architecture (the transformers class) describe it; inputs[] names the source checkpoint."
    ),
    produced_by="bignlp-convert to-hf --checkpoint RUN_DIR --output DIR",
    required_files=("config.json",),
)

EVALUATION = ArtifactKind(
    name="evaluation",
    kind_version=1,
    description=(
        "An evaluation of one model: results.json (lm-evaluation-harness's results, configs and versions per "
        "task), results.md and results.csv (one row per task and metric: acc, acc_norm, perplexity, "
        "word_perplexity, byte_perplexity, bits_per_byte) and the resolved config as config.yaml. "
        "summary.tasks lists the tasks, summary.metrics maps task → metric → value; inputs[] names the "
        "checkpoint by its manifest's sha256."
    ),
    produced_by="bignlp-evaluate harness --checkpoint RUN_DIR --tasks all_tasks --data-dir DIR --output DIR",
    required_files=("results.json",),
)

TASK_DATA = ArtifactKind(
    name="task-data",
    kind_version=1,
    description=(
        "A downstream task's examples in two forms, per split (train, validation, test) and, for XQuAD, per "
        "language: T5 text-to-text files t5/{split}[_{lang}]_src.txt and _tgt.txt (one example a line, the "
        "same line count) and prompt-learning JSONL prompt/{split}[_{lang}].jsonl (taskname, context, question, "
        "answer, ...). summary.task names the task (squad/v1.1, squad/v2.0, xquad, glue/mnli, ...), "
        "summary.source where the data came from, summary.splits the examples per split and file, "
        "summary.format the source template of the text-to-text files."
    ),
    produced_by="bignlp-dataprep run --config squad/v1.1 data_dir=DIR",
)

PROMPT_CHECKPOINT = ArtifactKind(
    name="prompt-checkpoint",
    kind_version=1,
    description=(
        "Virtual prompts learned on a frozen base model (p-tuning or prompt tuning), and nothing of the base: "
        "prompts.safetensors (table: one row per virtual token of every task, the p-tuning encoders folded in), "
        "prompt_config.json (per task: its template, total_virtual_tokens, virtual_token_splits, answer_field, "
        "truncate_field, first row in the table, style) and the resolved config as config.yaml. summary.base pins "
        "the base model-checkpoint by path and the sha256 of its manifest.json, summary.family its family, "
        "summary.tokenizer_sha256 the base's tokenizer files; summary.tasks lists the tasks."
    ),
    produced_by="bignlp-train prompt-learn --config gpt3/squad model.language_model_path=RUN_DIR",
    required_files=("prompts.safetensors", "prompt_config.json"),
)

TRITON_REPOSITORY = ArtifactKind(
    name="triton-repository",
    kind_version=1,
    description=(
        "A Triton Inference Server model repository for one checkpoint: preprocessing (text to ids), the model "
        "(Python backend generating with bignlp_models and a KV cache) and its decoupled twin <name>_stream, "
        "postprocessing (ids to text), ensemble and ensemble_stream chaining them; each with config.pbtxt and "
        "1/model.py. <name>/1/checkpoint is a weights-only model-checkpoint (with its own manifest), so the "
        "repository is self-contained. summary.model_name, summary.family, summary.models, summary.max_batch_size, "
        "summary.data_type; inputs[] names the source checkpoint by its manifest's sha256."
    ),
    produced_by="bignlp-export triton --checkpoint RUN_DIR --output DIR",
    required_files=("ensemble/config.pbtxt",),
)

KINDS: dict[str, ArtifactKind] = {
    k.name: k
    for k in (MEGATRON_DATASET, MODEL_CHECKPOINT, GPT_CHECKPOINT, CSP_VALIDATION, NEMO_ARCHIVE, HF_MODEL, EVALUATION,
                TASK_DATA, TRITON_REPOSITORY, PROMPT_CHECKPOINT)
}


def get_kind(name: str) -> ArtifactKind:
    """Look up a kind by name, with a clear error for an unknown one."""
    try:
        return KINDS[name]
    except KeyError:
        raise ArtifactError(f"unknown artifact kind {name!r}; known kinds: {', '.join(sorted(KINDS))}") from None
