"""The repository `bignlp-export triton` writes, its refusals, the launcher's keys, and T5/mT5 served."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from bignlp_contracts import read_manifest, sha256_file
from bignlp_export.cli import main


def _run(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "bignlp_export", *args], capture_output=True, text=True,
                          timeout=timeout)


def _one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_every_command_has_help():
    runner = CliRunner()
    for command in ("triton", "serve", "accuracy", "bench"):
        result = runner.invoke(main, [command, "--help"])
        assert result.exit_code == 0 and "Example" in result.output and "--" in result.output


def test_repository_layout_manifest_and_readable_configs(gpt_repo, gpt_checkpoint):
    manifest = read_manifest(gpt_repo, "triton-repository", verify="sha256")
    assert manifest.inputs[0]["manifest_sha256"] == sha256_file(gpt_checkpoint / "manifest.json")
    assert manifest.summary["models"] == ["ensemble", "ensemble_stream", "gpt", "gpt_stream", "postprocessing",
                                          "preprocessing"]
    for model in manifest.summary["models"]:
        assert (gpt_repo / model / "config.pbtxt").is_file() and (gpt_repo / model / "1").is_dir()
    carried = read_manifest(gpt_repo / "gpt" / "1" / "checkpoint", "model-checkpoint", verify="sha256")
    assert not any("optim" in f for f in carried.files)  # weights only
    assert carried.inputs[0]["manifest_sha256"] == manifest.inputs[0]["manifest_sha256"]
    model = (gpt_repo / "gpt" / "config.pbtxt").read_text()
    assert "dynamic_batching" in model and 'backend: "python"' in model and "max_batch_size: 8" in model
    assert "#   max_output_len" in model and "decoupled" not in model
    assert "decoupled: true" in (gpt_repo / "gpt_stream" / "config.pbtxt").read_text()
    ensemble = (gpt_repo / "ensemble" / "config.pbtxt").read_text()
    for name in ("text", "max_output_len", "top_k", "top_p", "temperature", "random_seed", "stop_words",
                 "output_text", "output_ids"):
        assert f'name: "{name}"' in ensemble
    assert 'model_name: "preprocessing"' in ensemble and 'model_name: "gpt"' in ensemble


def test_unknown_family_refused_at_export(gpt_checkpoint, tmp_path):
    odd = tmp_path / "odd"
    shutil.copytree(gpt_checkpoint, odd)
    data = json.loads((odd / "manifest.json").read_text())
    data["summary"]["family"] = "bert"
    (odd / "manifest.json").write_text(json.dumps(data))
    result = _run("triton", "--checkpoint", str(odd), "--output", str(tmp_path / "repo"))
    assert result.returncode == 3
    line = _one_line(result)
    assert str(odd) in line and "'bert'" in line and "family" in line
    assert not (tmp_path / "repo").exists()


def test_busy_output_and_bad_keys_refused(gpt_checkpoint, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    result = _run("triton", "--checkpoint", str(gpt_checkpoint), "--output", str(tmp_path / "busy"))
    assert result.returncode == 2 and "already holds something" in _one_line(result)
    result = _run("triton", "--config", "gpt3/export_gpt3", "--checkpoint", str(gpt_checkpoint), "--output",
                  str(tmp_path / "r"), "model.tensor_model_parallel_size=3")
    assert result.returncode == 2 and "tensor parallel size 3 does not divide" in _one_line(result)
    result = _run("triton", "--checkpoint", str(gpt_checkpoint), "--output", str(tmp_path / "r"),
                  "triton_deployment.max_batch_sise=4")
    assert result.returncode == 2 and "max_batch_sise" in _one_line(result)


def test_launcher_keys_choose_checkpoint_output_and_batching(gpt_checkpoint, tmp_path):
    repo = tmp_path / "from-config"
    result = _run("triton", "--config", "gpt3/export_gpt3", f"model.checkpoint_path={gpt_checkpoint}",
                  f"triton_deployment.triton_model_dir={repo}", "triton_deployment.max_batch_size=4",
                  "triton_deployment.model_name=fastertransformer", "model.weight_data_type=bf16")
    assert result.returncode == 0, result.stderr
    assert "max_batch_size: 4" in (repo / "fastertransformer" / "config.pbtxt").read_text()
    manifest = read_manifest(repo, "triton-repository")
    assert manifest.config["triton_deployment"]["max_batch_size"] == 4
    assert manifest.summary["weight_data_type"] == "bf16"
    from bignlp_models import open_checkpoint

    reader = open_checkpoint(repo / "fastertransformer" / "1" / "checkpoint")
    assert {dtype for _, dtype in reader.shapes.values()} == {__import__("torch").bfloat16}


@pytest.mark.parametrize("damage", ["deleted weights", "unknown family"])
def test_damaged_repository_refused_before_the_server_starts(gpt_repo, tmp_path, damage):
    repo = tmp_path / "repo"
    shutil.copytree(gpt_repo, repo)
    checkpoint = repo / "gpt" / "1" / "checkpoint"
    if damage == "deleted weights":
        victim = next(p for p in sorted((checkpoint / "dcp").iterdir()) if p.suffix == ".distcp")
        victim.unlink()
        expected = victim.name
    else:
        data = json.loads((checkpoint / "manifest.json").read_text())
        data["summary"]["family"] = "bert"
        (checkpoint / "manifest.json").write_text(json.dumps(data))
        # as a newer exporter would have recorded it: the repository's manifest agrees with the file
        outer = json.loads((repo / "manifest.json").read_text())
        outer["files"]["gpt/1/checkpoint/manifest.json"] = {"size": (checkpoint / "manifest.json").stat().st_size,
                                                            "sha256": sha256_file(checkpoint / "manifest.json")}
        (repo / "manifest.json").write_text(json.dumps(outer))
        expected = "'bert'"
    start = time.monotonic()
    result = _run("serve", "--repository", str(repo), "--http-port", "1", "--grpc-port", "2", "--metrics-port", "3")
    assert result.returncode == 3 and expected in _one_line(result)
    assert time.monotonic() - start < 60 and "tritonserver" not in result.stdout


@pytest.mark.parametrize("kind", ["t5", "mt5"])
def test_t5_and_mt5_served_equal_generate(kind, triton_install, tmp_path):
    """Served answers (one response and streamed) equal ``generate``; mT5 with its layers spread over 2 devices."""
    from convert_helpers import make_checkpoint
    from export_helpers import served

    from bignlp_export import client as C
    from bignlp_export.repository import export_repository
    from bignlp_models import generate, load_model

    checkpoint = make_checkpoint(tmp_path / "ckpt", kind)[0]
    # mT5's instance spreads its layers over two devices (both the CPU here): the answers stay the same
    spread = 2 if kind == "mt5" else 1
    export_repository(checkpoint, tmp_path / "repo", max_batch_size=4, num_threads=1, pipeline_parallel=spread)
    pbtxt = (tmp_path / "repo" / "t5" / "config.pbtxt").read_text()
    assert f'"devices_per_instance" value: {{ string_value: "{spread}"' in pbtxt
    loaded = load_model(checkpoint)
    tok = loaded.tokenizer
    end = tok.eos_id if tok.eos_id is not None else tok.sep_id
    start = tok.bos_id if tok.bos_id is not None else tok.cls_id
    texts = ["the cat sat on the mat", "translate this sentence please"]
    want = []
    for text in texts:
        ids = generate(loaded.model, [tok.encode(text)], max_new_tokens=6, greedy=True, stop_token_ids=[end],
                       pad_id=tok.pad_id if tok.pad_id is not None else 0, vocab_size=loaded.vocab_size,
                       decoder_start_token_id=start).tokens[0]
        want.append(ids[:-1] if ids and ids[-1] == end else ids)
    (tmp_path / "serve").mkdir()
    with served(tmp_path / "repo", tmp_path / "serve") as server:
        client = C.http_client(server.http)
        try:
            answer = C.generate(client, texts, 6)
        finally:
            client.close()
        streamed = [ids for _, ids in C.stream(server.grpc, texts[0], 6)]
    assert answer.ids == want and any(want)
    assert answer.texts == [tok.decode(ids) for ids in want]
    assert [t for ids in streamed for t in ids] == want[0]


def test_no_server_is_one_line(tmp_path):
    from export_helpers import free_port

    (tmp_path / "l.jsonl").write_text('{"text": "a b c"}\n')
    url = f"127.0.0.1:{free_port()}"
    for args in (("accuracy", "--data", str(tmp_path / "l.jsonl")), ("bench", "--output", str(tmp_path))):
        result = _run(*args, "--url", url)
        assert result.returncode == 4 and f"no Triton server answers at {url}" in _one_line(result)


def test_serve_names_a_server_or_env_it_cannot_use(gpt_repo, tmp_path):
    (tmp_path / "tritonserver").write_text("not a program")
    result = _run("serve", "--repository", str(gpt_repo), "--tritonserver", str(tmp_path / "tritonserver"))
    assert result.returncode == 2 and "not an executable file" in _one_line(result)
    result = _run("serve", "--repository", str(gpt_repo), "--triton-env", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "make triton-env" in _one_line(result)
