#!/usr/bin/env bash
# Held-out SQuAD v1.1 with a tiny T5 on CPU, end to end through the console scripts (issue 14):
# span-corruption pretraining of t5/tiny-cpu with T5's relative position bias and 256-token sources on
# an English corpus, fine-tuning on SQuAD dev articles 0-39 mixed with synthetic cloze questions made from
# that corpus, greedy EM/F1 on articles 40-47 (no article shared with training) before and after.
# Measured numbers and wall times: packages/train/README.md, "Held-out SQuAD with a tiny T5".
#
#   tests/bench/squad_heldout.sh                      # about 65 min on one CPU core
#   PRETRAIN_STEPS=20 FINETUNE_STEPS=20 tests/bench/squad_heldout.sh   # a smoke run of the pipeline
#
# Environment: BIN (console scripts, .venv/bin), SHARED_DATA (../shared/data: corpora/ and eval/),
# WORK_DIR (/tmp/f1/squad-heldout; emptied first), PRETRAIN_STEPS (1000), FINETUNE_STEPS (2000),
# VAL_EVERY (250), FINETUNE_LR (1e-3), ACCELERATOR (cpu).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-.venv/bin}
SHARED_DATA=${SHARED_DATA:-../shared/data}
WORK_DIR=${WORK_DIR:-/tmp/f1/squad-heldout}
PRETRAIN_STEPS=${PRETRAIN_STEPS:-1000}
FINETUNE_STEPS=${FINETUNE_STEPS:-2000}
VAL_EVERY=${VAL_EVERY:-250}
FINETUNE_LR=${FINETUNE_LR:-1e-3}
ACCELERATOR=${ACCELERATOR:-cpu}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}

for f in corpora/bible.web-en.rv1909-es.jsonl.gz corpora/debian-reference.11lang.jsonl.gz corpora/botchan.en.txt \
         eval/squad-v1.1-dev.json.gz; do
  if [ ! -f "$SHARED_DATA/$f" ]; then
    echo "skipped: $SHARED_DATA/$f absent (set SHARED_DATA)"
    exit 0
  fi
done

rm -rf "$WORK_DIR"
DATA=$WORK_DIR/data
"$BIN/python" tests/bench/squad_heldout_data.py "$SHARED_DATA" "$DATA"

# 1. Span-corruption pretraining: relative position bias, 256-token sources, 1000 steps x 16 (lr 1e-3, 5% warmup).
"$BIN/bignlp-dataprep" preprocess --input "$DATA/corpus-en.jsonl" --output-prefix "$DATA/pre/en" \
  --tokenizer-type BertWordPieceLowerCase --vocab-file tests/data/bert/vocab.txt --num-sentinel-tokens 100 \
  --split-sentences --workers 1
"$BIN/bignlp-train" pretrain --config t5/tiny-cpu model.data.data_prefix="[1.0,$DATA/pre/en_text_document]" \
  exp_manager.explicit_log_dir="$WORK_DIR/pretrain" trainer.accelerator="$ACCELERATOR" \
  trainer.max_steps="$PRETRAIN_STEPS" trainer.val_check_interval=250 trainer.log_every_n_steps=50 \
  trainer.max_time=null model.position_embedding_type=relative model.seq_length=256 \
  model.max_position_embeddings=256 model.data.seq_length_dec=68

# 2. Task data: training = articles 0-39 (one row per gold answer) + the cloze rows; validation = the
#    100 questions of tests/data/squad/dev-v1.1-slice.json (articles 40-47).
"$BIN/bignlp-dataprep" run --config squad/v1.1 data_dir="$DATA/squad" \
  train_source="$DATA/train-articles-0-39.json" dev_source=tests/data/squad/dev-v1.1-slice.json
mkdir -p "$DATA/mix"
cat "$DATA/cloze_src.txt" "$DATA/squad/t5/train_src.txt" > "$DATA/mix/train_src.txt"
cat "$DATA/cloze_tgt.txt" "$DATA/squad/t5/train_tgt.txt" > "$DATA/mix/train_tgt.txt"

# 3. Fine-tuning: batch 32, dropout 0, lr 1e-3 with 5% warmup annealed to 0, greedy validation F1 every VAL_EVERY steps.
"$BIN/bignlp-train" finetune --config t5/squad data_dir="$DATA/squad" \
  model.restore_from_path="$WORK_DIR/pretrain" exp_manager.explicit_log_dir="$WORK_DIR/finetune" \
  trainer.accelerator="$ACCELERATOR" trainer.precision=32 trainer.devices=1 trainer.max_epochs=null \
  trainer.max_steps="$FINETUNE_STEPS" trainer.val_check_interval="$VAL_EVERY" trainer.log_every_n_steps=50 \
  model.data.train_ds.src_file_name="$DATA/mix/train_src.txt" model.data.train_ds.tgt_file_name="$DATA/mix/train_tgt.txt" \
  model.data.train_ds.global_batch_size=32 model.data.train_ds.micro_batch_size=32 \
  model.data.train_ds.max_src_seq_length=256 model.data.train_ds.max_tgt_seq_length=24 \
  model.data.validation_ds.global_batch_size=100 model.data.validation_ds.micro_batch_size=100 \
  model.data.validation_ds.max_src_seq_length=256 model.data.validation_ds.max_tgt_seq_length=24 \
  model.data.validation_ds.metric.name=F1 exp_manager.checkpoint_callback_params.monitor=validation_F1 \
  model.hidden_dropout=0.0 model.attention_dropout=0.0 \
  model.optim.lr="$FINETUNE_LR" model.optim.sched.warmup_ratio=0.05 | tee "$WORK_DIR/finetune.log"

# 4. EM/F1 on every held-out question (388, articles 40-47): the untrained base, then the best checkpoint.
best=$(sed -n 's/^best checkpoint: \([^ ]*\) .*/\1/p' "$WORK_DIR/finetune.log")
device=$([ "$ACCELERATOR" = gpu ] && echo cuda || echo cpu)
"$BIN/bignlp-evaluate" squad --checkpoint "$WORK_DIR/pretrain" --data "$DATA/heldout-articles-40-47.json" \
  --output "$WORK_DIR/eval-base" --device "$device" --batch-size 50 --max-source-length 256 --max-new-tokens 24
"$BIN/bignlp-evaluate" squad --checkpoint "$best" --data "$DATA/heldout-articles-40-47.json" \
  --output "$WORK_DIR/eval" --device "$device" --batch-size 50

echo
echo "held-out F1 (0-100) on the 100 questions of tests/data/squad/dev-v1.1-slice.json, base → fine-tuned:"
grep -E "^validation_F1 (before|after)|^best checkpoint" "$WORK_DIR/finetune.log"
echo "held-out EM/F1 on all 388 questions of articles 40-47, untrained base ($WORK_DIR/eval-base):"
cat "$WORK_DIR/eval-base/results.md"
echo "held-out EM/F1 on all 388 questions of articles 40-47, best fine-tuned checkpoint ($WORK_DIR/eval):"
cat "$WORK_DIR/eval/results.md"
