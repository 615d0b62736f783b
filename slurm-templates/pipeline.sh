#!/bin/bash
# Submit a whole pipeline to Slurm and watch it: a dataprep array (one shard per task) -> finalize
# -> training [-> conversion to .nemo or Hugging Face, when CONVERT_OUTPUT is set] [-> evaluation with
# lm-eval tasks, when EVAL_OUTPUT is set] [-> fine-tuning, when FINETUNE_DIR is set [-> its evaluation, when
# FINETUNE_EVAL_OUTPUT is set]] [-> a Triton server, when SERVE_REPOSITORY is set], chained with sbatch
# --parsable and --dependency=afterok.
# When a stage fails, its dependents are cancelled (scancel, on top of --kill-on-invalid-dep=yes) and
# the failed stage, array task, exit code and log are named. The same chain trains GPT-3, T5 or mT5: the training config
# decides (a T5/mT5 config needs a dataset with sentinels, which the t5/ and mt5/ recipes make).
#
# Usage: slurm-templates/pipeline.sh [--no-watch]
#   --no-watch   submit, print the job ids and return (the chain still cancels itself on failure
#                through --kill-on-invalid-dep=yes, but nothing reports it)
#   -h, --help   this text
#
# Parameters (environment variables):
#   DATA_CONFIG          required  dataprep recipe: generic/custom_dataset, gpt3/download_gpt3_pile,
#                                  t5/download_t5_pile, mt5/download_mc4 or a YAML file
#   DATA_DIR             required  dataset artifact directory, on a filesystem every node sees
#   NUM_SHARDS           required  dataprep array tasks; the recipe's files are dealt among them (round-robin;
#                                  mt5/download_mc4 balances them by size)
#   TRAIN_CONFIG         required  training config: gpt3/126m, t5/220m, mt5/170m, gpt3/tiny-cpu, ... or a YAML file
#   RESULTS_DIR          required  training run directory (config.yaml, metrics.jsonl, checkpoints/)
#   DATA_OVERRIDES       optional  KEY=VALUE recipe overrides, space-separated (raw_dataset_files=[...] ...)
#   TRAIN_OVERRIDES      optional  key.sub=value training overrides, space-separated
#   TRAIN_DATA_PREFIX    optional  what training reads: a dataset dir, DIR/NAME_text_document or a blend
#                                  "[0.5,DIR/A_text_document,0.5,DIR/B_text_document]"
#                                  (default: DATA_DIR, every pair in it weighted by its tokens)
#   TRAIN_NODES          optional  training nodes (default 1)
#   TRAIN_TASKS_PER_NODE optional  training processes per node, one per GPU or CPU slot
#                                  (default: TRAIN_GPUS_PER_NODE, else 1)
#   TRAIN_GPUS_PER_NODE  optional  --gpus-per-node of the training job (default: none)
#   TRAIN_JOB_NAME       optional  training job name for --dependency=singleton
#                                  (default: bignlp-train:<last part of RESULTS_DIR>)
#   DATAPREP_CPUS        optional  --cpus-per-task of each array task (default: the template's, 8)
#   FINALIZE_CPUS        optional  --cpus-per-task of the finalize job (default: the template's, 1)
#   TRAIN_CPUS           optional  --cpus-per-task of each training task (default: the template's, 2)
#   SBATCH_ARGS          optional  more sbatch options for every stage, space-separated (--partition=gpu ...);
#                                  --kill-on-invalid-dep=no here leaves cancelling dependents to the watcher alone
#   CONVERT_OUTPUT       optional  add a conversion stage after training (convert.sbatch): the .nemo file
#                                  (DIR/megatron_gpt.nemo) or, with CONVERT_FORMAT=hf, the model directory to write
#   CONVERT_FORMAT       optional  nemo (default) or hf
#   CONVERT_TP, CONVERT_PP optional  tensor / pipeline model-parallel size of the .nemo (default 1, 1)
#   CONVERT_CONFIG       optional  conversion config with the launcher's keys (gpt3/convert_gpt3, t5/convert_t5, ...)
#   CONVERT_CPUS         optional  --cpus-per-task of the conversion job (default: the template's, 2)
#   EVAL_OUTPUT          optional  add an evaluation stage after training (evaluate.sbatch): the evaluation
#                                  artifact directory to write (new or empty)
#   EVAL_DATA_DIR        with EVAL_OUTPUT  the task files (<task>.jsonl each; see bignlp-evaluate download)
#   EVAL_TASKS           optional  comma list of tasks, or all_tasks (default: all_tasks)
#   EVAL_CONFIG          optional  evaluation config with the launcher's keys (gpt3/evaluate_all or a YAML file)
#   EVAL_TASKS_PER_NODE  optional  evaluation processes, one per GPU or CPU slot (default: EVAL_GPUS_PER_NODE, else 1)
#   EVAL_GPUS_PER_NODE   optional  --gpus-per-node of the evaluation job (default: none)
#   EVAL_CPUS            optional  --cpus-per-task of each evaluation task (default: the template's, 2)
#   FINETUNE_DIR         optional  add a fine-tuning stage after training (finetune.sbatch): its run directory
#   FINETUNE_CONFIG      with FINETUNE_DIR  fine-tuning config (t5/squad, mt5/xquad, t5/glue_mnli, t5/custom_task, ...)
#   FINETUNE_DATA_DIR    optional  the task data (bignlp-dataprep run --config squad/v1.1 ...): the config's ${data_dir}
#   FINETUNE_OVERRIDES   optional  key.sub=value fine-tuning overrides, space-separated
#   FINETUNE_NODES, FINETUNE_TASKS_PER_NODE, FINETUNE_GPUS_PER_NODE  optional  its resources (default 1, 1, none)
#   FINETUNE_EVAL_OUTPUT optional  evaluate the fine-tuned model after it (evaluate.sbatch): the evaluation artifact
#   FINETUNE_EVAL_COMMAND optional squad (default), xquad, glue or custom
#   FINETUNE_EVAL_DATA   with FINETUNE_EVAL_OUTPUT  its data (a SQuAD JSON, a task-data directory, a source file)
#   SERVE_REPOSITORY     optional  add a serving stage after training (serve.sbatch): the trained run exported to this
#                                  Triton model repository and served until the job is cancelled or times out;
#                                  the watch counts it done once its endpoints are up (the job keeps serving)
#   SERVE_HOST           optional  address the server binds (default 127.0.0.1; 0.0.0.0 to serve other nodes)
#   SERVE_GPUS_PER_NODE  optional  --gpus-per-node of the serving job (default: none)
#   SERVE_TIME           optional  --time of the serving job (default: the template's, 4 hours)
#   LOG_DIR              optional  directory of the jobs' output files (default: the current directory)
#   WATCH_POLL_S         optional  seconds between two looks at the queue (default 5)
#   CONTAINER_IMAGE, CONTAINER_MOUNTS, BIGNLP_VENV and sbatch's own SBATCH_* input variables
#                        (SBATCH_PARTITION, SBATCH_ACCOUNT, ...) reach every stage.
#
# Output: one "stage=JOBID" line per stage on stdout (dataprep=, finalize=, train=[, convert=][, evaluate=]
# [, finetune=][, finetune-evaluate=][, serve=]);
# progress and the failure report on stderr. Exit status: 0 every stage completed (with --no-watch: submitted),
# 1 a stage failed or was cancelled, 2 a bad parameter or a job sbatch refused (nothing is left queued),
# 130 interrupted while watching (the jobs keep running).
#
# Example (2 shards of your own files, then 2 nodes x 1 task of training):
#   DATA_CONFIG=generic/custom_dataset DATA_DIR=/data/mine NUM_SHARDS=2 \
#   DATA_OVERRIDES="raw_dataset_files=[/raw/a.jsonl,/raw/b.jsonl] vocab_file=/bpe/vocab.json merge_file=/bpe/merges.txt" \
#   TRAIN_CONFIG=gpt3/tiny-cpu RESULTS_DIR=/results/tiny TRAIN_NODES=2 \
#   slurm-templates/pipeline.sh
#
# Example (T5: 4 Pile shards from a mirror, BERT vocab and 100 sentinels, then 2 GPU nodes):
#   DATA_CONFIG=t5/download_t5_pile DATA_DIR=/data/pile-t5 NUM_SHARDS=4 \
#   DATA_OVERRIDES="the_pile_url=https://mirror.example/pile/train file_numbers=0-3" \
#   TRAIN_CONFIG=t5/220m RESULTS_DIR=/results/t5_220m TRAIN_NODES=2 TRAIN_GPUS_PER_NODE=8 \
#   slurm-templates/pipeline.sh
set -uo pipefail

PROG="pipeline.sh"
TEMPLATES="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STAGES=(dataprep finalize train)

die() { echo "${PROG}: $*" >&2; exit 2; }
say() { echo "${PROG}: $*" >&2; }

watch=1
for arg in "$@"; do
  case "${arg}" in
    --no-watch) watch=0 ;;
    --watch) watch=1 ;;
    -h|--help) sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument '${arg}': the only flags are --no-watch and --help (parameters are environment variables)" ;;
  esac
done

# --- parameters -----------------------------------------------------------------------------------
require() {  # require NAME WHAT: a missing parameter is one line naming it
  [[ -n ${!1:-} ]] || die "set $1 to $2"
}
require DATA_CONFIG "the dataprep recipe (generic/custom_dataset, gpt3/download_gpt3_pile, t5/download_t5_pile) or a YAML file"
require DATA_DIR "the dataset artifact directory (on a filesystem every node sees)"
require NUM_SHARDS "the number of dataprep array tasks (one share of the files each)"
require TRAIN_CONFIG "the training config (gpt3/126m, t5/220m, mt5/170m) or a YAML file"
require RESULTS_DIR "the training run directory"

positive_int() {  # positive_int NAME VALUE
  [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1='$2' is not a positive integer"
}
positive_int NUM_SHARDS "${NUM_SHARDS}"
positive_int TRAIN_NODES "${TRAIN_NODES:=1}"
[[ -z ${TRAIN_GPUS_PER_NODE:-} ]] || positive_int TRAIN_GPUS_PER_NODE "${TRAIN_GPUS_PER_NODE}"
positive_int TRAIN_TASKS_PER_NODE "${TRAIN_TASKS_PER_NODE:=${TRAIN_GPUS_PER_NODE:-1}}"
for name in DATAPREP_CPUS FINALIZE_CPUS TRAIN_CPUS CONVERT_CPUS CONVERT_TP CONVERT_PP EVAL_CPUS EVAL_GPUS_PER_NODE \
  SERVE_GPUS_PER_NODE FINETUNE_NODES FINETUNE_GPUS_PER_NODE; do
  [[ -z ${!name:-} ]] || positive_int "${name}" "${!name}"
done
if [[ -n ${CONVERT_OUTPUT:-} ]]; then
  [[ ${CONVERT_FORMAT:=nemo} == nemo || ${CONVERT_FORMAT} == hf ]] || die "CONVERT_FORMAT='${CONVERT_FORMAT}' is neither nemo nor hf"
  [[ ${CONVERT_FORMAT} == hf || ${CONVERT_OUTPUT} == *.nemo ]] || die "CONVERT_OUTPUT='${CONVERT_OUTPUT}' must name a .nemo file (or set CONVERT_FORMAT=hf)"
  STAGES+=(convert)
elif [[ -n ${CONVERT_FORMAT:-}${CONVERT_TP:-}${CONVERT_PP:-}${CONVERT_CONFIG:-} ]]; then
  die "CONVERT_FORMAT, CONVERT_TP, CONVERT_PP and CONVERT_CONFIG need CONVERT_OUTPUT (the conversion's output)"
fi
if [[ -n ${EVAL_OUTPUT:-} ]]; then
  require EVAL_DATA_DIR "the evaluation task files directory (<task>.jsonl each; see bignlp-evaluate download)"
  positive_int EVAL_TASKS_PER_NODE "${EVAL_TASKS_PER_NODE:=${EVAL_GPUS_PER_NODE:-1}}"
  STAGES+=(evaluate)
elif [[ -n ${EVAL_DATA_DIR:-}${EVAL_TASKS:-}${EVAL_CONFIG:-}${EVAL_TASKS_PER_NODE:-}${EVAL_GPUS_PER_NODE:-} ]]; then
  die "EVAL_DATA_DIR, EVAL_TASKS, EVAL_CONFIG, EVAL_TASKS_PER_NODE and EVAL_GPUS_PER_NODE need EVAL_OUTPUT (the evaluation's output)"
fi
if [[ -n ${FINETUNE_DIR:-} ]]; then
  require FINETUNE_CONFIG "the fine-tuning config (t5/squad, mt5/xquad, t5/glue_mnli, t5/custom_task) or a YAML file"
  positive_int FINETUNE_TASKS_PER_NODE "${FINETUNE_TASKS_PER_NODE:=${FINETUNE_GPUS_PER_NODE:-1}}"
  STAGES+=(finetune)
  if [[ -n ${FINETUNE_EVAL_OUTPUT:-} ]]; then
    require FINETUNE_EVAL_DATA "the fine-tuned model's evaluation data (a SQuAD JSON, a task-data directory, a source file)"
    case "${FINETUNE_EVAL_COMMAND:=squad}" in
      squad|xquad|glue|custom) ;;
      *) die "FINETUNE_EVAL_COMMAND='${FINETUNE_EVAL_COMMAND}' is none of squad, xquad, glue, custom" ;;
    esac
    STAGES+=(finetune-evaluate)
  fi
elif [[ -n ${FINETUNE_CONFIG:-}${FINETUNE_EVAL_OUTPUT:-}${FINETUNE_DATA_DIR:-} ]]; then
  die "FINETUNE_CONFIG, FINETUNE_DATA_DIR and FINETUNE_EVAL_OUTPUT need FINETUNE_DIR (the fine-tuning run directory)"
fi
if [[ -n ${SERVE_REPOSITORY:-} ]]; then
  STAGES+=(serve)
elif [[ -n ${SERVE_HOST:-}${SERVE_GPUS_PER_NODE:-}${SERVE_TIME:-} ]]; then
  die "SERVE_HOST, SERVE_GPUS_PER_NODE and SERVE_TIME need SERVE_REPOSITORY (the repository to serve)"
fi
[[ ${WATCH_POLL_S:=5} =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "WATCH_POLL_S='${WATCH_POLL_S}' is not a number of seconds"
TRAIN_JOB_NAME="${TRAIN_JOB_NAME:-bignlp-train:$(basename "${RESULTS_DIR}")}"
LOG_DIR="${LOG_DIR:-$(pwd)}"
for tool in sbatch scontrol scancel; do
  command -v "${tool}" >/dev/null || die "${tool} not found: run this where the Slurm client commands are installed"
done
mkdir -p "${LOG_DIR}" || die "cannot create LOG_DIR=${LOG_DIR}"

# shellcheck disable=SC2206  # SBATCH_ARGS is a word list on purpose
common=(${SBATCH_ARGS:-})
# A job whose dependency failed is cancelled by Slurm instead of pending forever, unless SBATCH_ARGS
# says otherwise (sbatch lets "yes" win when both are given).
[[ " ${SBATCH_ARGS:-} " == *" --kill-on-invalid-dep"* ]] || common=(--kill-on-invalid-dep=yes "${common[@]}")

# --- submission -----------------------------------------------------------------------------------
ids=()
errfile="$(mktemp)"
trap 'rm -f "${errfile}"' EXIT

submit() {  # submit STAGE VAR=VALUE... -- SBATCH_OPTION...: append the job id to ids
  local stage=$1 out id
  local -a vars=()
  shift
  while [[ $1 != -- ]]; do vars+=("$1"); shift; done
  shift
  # The parameters travel in sbatch's environment (its default --export=ALL): values such as
  # raw_dataset_files=[a,b] hold commas, which --export=VAR=... would split.
  out="$(env "${vars[@]}" sbatch --parsable "${common[@]}" "$@" 2>"${errfile}")"
  id="${out%%;*}"
  if [[ ! ${id} =~ ^[0-9]+$ ]]; then
    local why
    why="$(grep -v '^$' "${errfile}" | tail -n 1)"
    (( ${#ids[@]} == 0 )) || scancel "${ids[@]}" 2>/dev/null
    die "sbatch refused the ${stage} job: ${why:-no job id in its output '${out}'}${ids[*]:+ (cancelled jobs ${ids[*]} submitted before it)}"
  fi
  ids+=("${id}")
}

dataprep_env=("CONFIG=${DATA_CONFIG}" "DATA_DIR=${DATA_DIR}" "OVERRIDES=${DATA_OVERRIDES:-}")

submit dataprep "${dataprep_env[@]}" -- \
  --array="0-$((NUM_SHARDS - 1))" \
  --output="${LOG_DIR}/bignlp-dataprep-%A_%a.out" \
  ${DATAPREP_CPUS:+--cpus-per-task="${DATAPREP_CPUS}"} \
  "${TEMPLATES}/dataprep-array.sbatch"

submit finalize "${dataprep_env[@]}" -- \
  --dependency="afterok:${ids[0]}" \
  --output="${LOG_DIR}/bignlp-dataprep-finalize-%j.out" \
  ${FINALIZE_CPUS:+--cpus-per-task="${FINALIZE_CPUS}"} \
  "${TEMPLATES}/dataprep-finalize.sbatch"

# A --dependency on the command line replaces the template's singleton, so it is repeated here.
submit train \
  "CONFIG=${TRAIN_CONFIG}" "DATA_PREFIX=${TRAIN_DATA_PREFIX:-${DATA_DIR}}" "RESULTS_DIR=${RESULTS_DIR}" \
  "OVERRIDES=${TRAIN_OVERRIDES:-}" -- \
  --dependency="afterok:${ids[1]},singleton" \
  --job-name="${TRAIN_JOB_NAME}" \
  --nodes="${TRAIN_NODES}" \
  --ntasks-per-node="${TRAIN_TASKS_PER_NODE}" \
  ${TRAIN_GPUS_PER_NODE:+--gpus-per-node="${TRAIN_GPUS_PER_NODE}"} \
  ${TRAIN_CPUS:+--cpus-per-task="${TRAIN_CPUS}"} \
  --output="${LOG_DIR}/bignlp-train-%j.out" \
  "${TEMPLATES}/train.sbatch"

if [[ -n ${CONVERT_OUTPUT:-} ]]; then
  submit convert \
    "CHECKPOINT=${RESULTS_DIR}" "OUTPUT=${CONVERT_OUTPUT}" "FORMAT=${CONVERT_FORMAT}" "TP=${CONVERT_TP:-}" \
    "PP=${CONVERT_PP:-}" "CONFIG=${CONVERT_CONFIG:-}" -- \
    --dependency="afterok:${ids[2]}" \
    ${CONVERT_CPUS:+--cpus-per-task="${CONVERT_CPUS}"} \
    --output="${LOG_DIR}/bignlp-convert-%j.out" \
    "${TEMPLATES}/convert.sbatch"
fi

if [[ -n ${EVAL_OUTPUT:-} ]]; then
  submit evaluate \
    "CHECKPOINT=${RESULTS_DIR}" "DATA_DIR=${EVAL_DATA_DIR}" "OUTPUT=${EVAL_OUTPUT}" "TASKS=${EVAL_TASKS:-}" \
    "CONFIG=${EVAL_CONFIG:-}" -- \
    --dependency="afterok:${ids[2]}" \
    --ntasks-per-node="${EVAL_TASKS_PER_NODE}" \
    ${EVAL_GPUS_PER_NODE:+--gpus-per-node="${EVAL_GPUS_PER_NODE}"} \
    ${EVAL_CPUS:+--cpus-per-task="${EVAL_CPUS}"} \
    --output="${LOG_DIR}/bignlp-evaluate-%j.out" \
    "${TEMPLATES}/evaluate.sbatch"
fi

if [[ -n ${FINETUNE_DIR:-} ]]; then
  submit finetune "CONFIG=${FINETUNE_CONFIG}" "BASE=${RESULTS_DIR}" "RESULTS_DIR=${FINETUNE_DIR}" \
    "DATA_DIR=${FINETUNE_DATA_DIR:-}" "OVERRIDES=${FINETUNE_OVERRIDES:-}" -- \
    --dependency="afterok:${ids[2]}" \
    --nodes="${FINETUNE_NODES:-1}" \
    --ntasks-per-node="${FINETUNE_TASKS_PER_NODE}" \
    ${FINETUNE_GPUS_PER_NODE:+--gpus-per-node="${FINETUNE_GPUS_PER_NODE}"} \
    --output="${LOG_DIR}/bignlp-finetune-%j.out" \
    "${TEMPLATES}/finetune.sbatch"
  if [[ -n ${FINETUNE_EVAL_OUTPUT:-} ]]; then
    submit finetune-evaluate "COMMAND=${FINETUNE_EVAL_COMMAND}" "CHECKPOINT=${FINETUNE_DIR}" \
      "DATA=${FINETUNE_EVAL_DATA}" "OUTPUT=${FINETUNE_EVAL_OUTPUT}" -- \
      --dependency="afterok:${ids[-1]}" \
      --output="${LOG_DIR}/bignlp-evaluate-%j.out" \
      "${TEMPLATES}/evaluate.sbatch"
  fi
fi

if [[ -n ${SERVE_REPOSITORY:-} ]]; then
  submit serve "CHECKPOINT=${RESULTS_DIR}" "REPOSITORY=${SERVE_REPOSITORY}" "HOST=${SERVE_HOST:-}" -- \
    --dependency="afterok:${ids[2]}" \
    ${SERVE_GPUS_PER_NODE:+--gpus-per-node="${SERVE_GPUS_PER_NODE}"} \
    ${SERVE_TIME:+--time="${SERVE_TIME}"} \
    --output="${LOG_DIR}/bignlp-serve-%j.out" \
    "${TEMPLATES}/serve.sbatch"
  serve_id="${ids[-1]}"
fi

for i in "${!STAGES[@]}"; do
  echo "${STAGES[i]}=${ids[i]}"
done
say "submitted dataprep array ${ids[0]} (${NUM_SHARDS} tasks) -> finalize ${ids[1]} -> train ${ids[2]}" \
  "(${TRAIN_NODES} node(s) x ${TRAIN_TASKS_PER_NODE} task(s))${CONVERT_OUTPUT:+ -> convert ${ids[3]} (${CONVERT_FORMAT:-})}${EVAL_OUTPUT:+ -> evaluate}${FINETUNE_DIR:+ -> finetune}${FINETUNE_EVAL_OUTPUT:+ -> evaluate}${SERVE_REPOSITORY:+ -> serve ${ids[-1]}}; logs in ${LOG_DIR}"
(( watch )) || exit 0

# --- watching -------------------------------------------------------------------------------------
# scontrol, not sacct: sacct needs an accounting database, and MinJobAge (300 s by default) keeps
# finished jobs visible to scontrol for longer than one poll.
started=${SECONDS}
trap 'say "stopped watching; the jobs keep running (cancel them with: scancel ${ids[*]})"; exit 130' INT TERM

job_rows() {  # job_rows ID: "JOBID TASK STATE EXITCODE STDOUT" per job, or per task of an array
  scontrol -o show job "$1" 2>"${errfile}" | awk '{
    delete f
    for (i = 1; i <= NF; i++) { p = index($i, "="); if (p) f[substr($i, 1, p - 1)] = substr($i, p + 1) }
    print f["JobId"], (("ArrayTaskId" in f) ? f["ArrayTaskId"] : "-"), f["JobState"], f["ExitCode"], f["StdOut"]
  }'
}

# Set by stage_status: state ok|active|failed|unknown, a summary, the failed rows, the rows still queued.
stage_state=""; stage_summary=""; stage_failed=(); stage_active=0
unknown_polls=0

stage_status() {  # stage_status ID
  local rows jobid task state code stdout log_file=""
  local -A count=()
  stage_failed=()
  rows="$(job_rows "$1")"
  if [[ -z ${rows} ]]; then
    stage_state="unknown"
    stage_summary="$(grep -v '^$' "${errfile}" | tail -n 1)"
    return
  fi
  stage_active=0
  while read -r jobid task state code stdout; do
    case "${state}" in
      COMPLETED) ;;
      PENDING|CONFIGURING|RUNNING|COMPLETING|REQUEUED|REQUEUE_FED|REQUEUE_HOLD|RESIZING|SUSPENDED|STAGE_OUT|SIGNALING|STOPPED|RESV_DEL_HOLD)
        stage_active=$(( stage_active + 1 )) ;;
      *) stage_failed+=("${jobid} ${task} ${state} ${code} ${stdout}") ;;
    esac
    count[${state}]=$(( ${count[${state}]:-0} + 1 ))
    log_file="${stdout}"
  done <<<"${rows}"
  stage_summary=""
  for state in "${!count[@]}"; do
    stage_summary+="${stage_summary:+, }${count[${state}]} ${state,,}"
  done
  if (( ${#stage_failed[@]} )); then
    stage_state="failed"
  elif [[ ${#count[@]} -eq 1 && -n ${count[COMPLETED]:-} ]]; then
    stage_state="ok"
  elif [[ $1 == "${serve_id:-}" && -n ${count[RUNNING]:-} && -f ${log_file} ]] && grep -q '^http ' "${log_file}"; then
    # a server never completes: it is up once serve has printed its endpoints
    stage_state="ok"
    stage_summary="serving, $(grep -m 1 '^http ' "${log_file}" | tr -s ' ')"
  else
    stage_state="active"
  fi
}

report_failure() {  # report_failure STAGE_INDEX
  local stage=${STAGES[$1]} row jobid task state code stdout what excerpt
  for row in "${stage_failed[@]}"; do
    read -r jobid task state code stdout <<<"${row}"
    if [[ ${task} == - ]]; then
      what="job ${jobid}"
    else
      what="array task ${task} (job ${ids[$1]}_${task})"
    fi
    local how="exit code ${code%%:*}"
    [[ ${code#*:} == 0 ]] || how="killed by signal ${code#*:}"
    say "stage ${stage} failed: ${what} ${state}, ${how}; log: ${stdout}"
    if [[ -f ${stdout} ]]; then
      # Our tools' one-line errors (one per task, hence uniq), else the log's last lines.
      excerpt="$(grep -E '^bignlp-[a-z-]+: error' "${stdout}" | uniq | tail -n 3)"
      [[ -n ${excerpt} ]] || excerpt="$(grep -v '^[[:space:]]*$' "${stdout}" | tail -n 3)"
      sed "s/^/${PROG}:   | /" <<<"${excerpt}" >&2
    fi
  done
}

cancel_dependents() {  # cancel_dependents STAGE_INDEX: scancel every later stage, wait until they are gone
  local first=$(( $1 + 1 )) i deadline
  local -a later=("${ids[@]:first}")
  (( ${#later[@]} )) || return 0
  # --kill-on-invalid-dep=yes already asks Slurm to do this; scancel makes it certain (and quick).
  scancel "${later[@]}" 2>/dev/null
  deadline=$(( SECONDS + 30 ))
  for (( i = first; i < ${#ids[@]}; i++ )); do
    while :; do
      stage_status "${ids[i]}"
      [[ ${stage_state} == active && ${SECONDS} -lt ${deadline} ]] || break
      sleep 0.5
    done
    say "dependent stage ${STAGES[i]} (job ${ids[i]}): ${stage_summary}"
  done
}

declare -A shown=()
current=0
while (( current < ${#STAGES[@]} )); do
  for (( i = current; i < ${#STAGES[@]}; i++ )); do
    stage_status "${ids[i]}"
    if [[ ${stage_state} == unknown ]]; then
      # slurmctld busy or restarting: try again a few times; a job it no longer knows is an error.
      if (( ++unknown_polls >= 12 )) || [[ ${stage_summary} == *"Invalid job id"* ]]; then
        say "stage ${STAGES[i]} (job ${ids[i]}): Slurm cannot tell its state: ${stage_summary}"
        cancel_dependents "${i}"
        exit 1
      fi
      break
    fi
    unknown_polls=0
    if [[ ${shown[${STAGES[i]}]:-} != "${stage_summary}" ]]; then
      shown[${STAGES[i]}]="${stage_summary}"
      say "[$(( SECONDS - started )) s] ${STAGES[i]} (job ${ids[i]}): ${stage_summary}"
    fi
    case "${stage_state}" in
      failed)
        report_failure "${i}"
        if (( stage_active )); then
          say "${STAGES[i]} (job ${ids[i]}) still has ${stage_active} task(s) in the queue, left to finish: what they complete is kept"
        fi
        cancel_dependents "${i}"
        say "fix the cause and run ${PROG} again: finished dataprep shards are skipped and training resumes from its latest checkpoint"
        exit 1
        ;;
      ok) (( i == current )) && current=$(( i + 1 )) ;;
    esac
  done
  (( current < ${#STAGES[@]} )) && sleep "${WATCH_POLL_S}"
done
say "all stages completed in $(( SECONDS - started )) s: dataset ${DATA_DIR}, training run ${RESULTS_DIR}${CONVERT_OUTPUT:+, converted ${CONVERT_OUTPUT}}${EVAL_OUTPUT:+, evaluation ${EVAL_OUTPUT}}${FINETUNE_DIR:+, fine-tuned ${FINETUNE_DIR}}${FINETUNE_EVAL_OUTPUT:+ (evaluated in ${FINETUNE_EVAL_OUTPUT})}${SERVE_REPOSITORY:+, serving ${SERVE_REPOSITORY} (job ${serve_id:-}: scancel it to stop)}"
exit 0
