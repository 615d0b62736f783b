"""Against a real tritonserver on 127.0.0.1 (one for the session, started by `bignlp-export serve`)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as http
from tritonclient.utils import InferenceServerException

from bignlp_export import client as C
from bignlp_models import generate, load_model

PROMPTS = ["The baker woke before dawn and", "Hello", "Mara packed her bag, locked the door, and walked"]


def _reference(checkpoint, texts, max_new, **sampling):
    loaded = load_model(checkpoint)
    tok = loaded.tokenizer
    out = []
    for text in texts:
        tokens = generate(loaded.model, [tok.encode(text)], max_new_tokens=max_new, greedy=True,
                          stop_token_ids=[tok.eod_id], pad_id=tok.eod_id, vocab_size=loaded.vocab_size).tokens[0]
        out.append(tokens[:-1] if tokens and tokens[-1] == tok.eod_id else tokens)
    return out, tok


def test_answer_equals_generate_greedy(gpt_server, gpt_checkpoint):
    want, tok = _reference(gpt_checkpoint, PROMPTS, 12)
    client = C.http_client(gpt_server.http)
    try:
        one_batch = C.generate(client, PROMPTS, 12)
        one_by_one = [C.generate(client, [p], 12) for p in PROMPTS]
    finally:
        client.close()
    assert one_batch.ids == want
    assert [a.ids[0] for a in one_by_one] == want
    assert one_batch.texts == [tok.decode(ids) for ids in want]
    assert all(len(ids) == 12 for ids in want)  # random weights rarely end early: the full length was served


def test_generate_command_prints_the_served_answer(gpt_server, gpt_checkpoint):
    want, tok = _reference(gpt_checkpoint, PROMPTS[:1], 8)
    cmd = [sys.executable, "-m", "bignlp_export", "generate", "--url", gpt_server.http, "--prompt", PROMPTS[0],
           "--max-output-len", "8"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == PROMPTS[0] + tok.decode(want[0]) + "\n"
    bad = subprocess.run([*cmd[:5], "127.0.0.1:9", *cmd[6:]], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_stream_gives_the_same_tokens_one_step_at_a_time(gpt_server, gpt_checkpoint):
    want, tok = _reference(gpt_checkpoint, PROMPTS[:1], 8)
    steps = list(C.stream(gpt_server.grpc, PROMPTS[0], 8))
    assert [ids for _, ids in steps] == [[t] for t in want[0]]
    assert [text for text, _ in steps] == [tok.decode([t]) for t in want[0]]


def test_sampling_is_a_function_of_the_seed_and_stop_words_end_rows(gpt_server):
    client = C.http_client(gpt_server.http)
    try:
        a = C.generate(client, [PROMPTS[0]], 10, top_k=0, temperature=1.0, random_seed=7)
        b = C.generate(client, [PROMPTS[0]], 10, top_k=0, temperature=1.0, random_seed=7)
        c = C.generate(client, [PROMPTS[0]], 10, top_k=0, temperature=1.0, random_seed=8)
        greedy = C.generate(client, [PROMPTS[0]], 10)
        stop = greedy.texts[0].split()[1]  # a word the greedy answer reaches after a few tokens
        stopped = C.generate(client, [PROMPTS[0]], 10, stop_words=[stop])
    finally:
        client.close()
    assert a.ids == b.ids and a.ids != c.ids and a.ids != greedy.ids
    assert stopped.texts[0].endswith(stop) or stop in stopped.texts[0]
    assert len(stopped.ids[0]) < len(greedy.ids[0]) and greedy.ids[0][:len(stopped.ids[0])] == stopped.ids[0]


def test_32_clients_x_20_requests_all_answered_and_batched(gpt_server):
    before = C.metrics(gpt_server.metrics)
    answers, errors = [], []
    lock = threading.Lock()

    def client_loop(i):
        client = C.http_client(gpt_server.http)
        try:
            for j in range(20):
                a = C.generate(client, [f"request {i} {j}: the"], 2)
                with lock:
                    answers.append(len(a.ids[0]))
        except Exception as exc:
            with lock:
                errors.append(repr(exc))
        finally:
            client.close()

    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=150)
    assert not any(t.is_alive() for t in threads), "clients still waiting after 150 s"
    assert not errors and len(answers) == 640
    after = C.metrics(gpt_server.metrics)
    requests = after[("nv_inference_count", "gpt")] - before.get(("nv_inference_count", "gpt"), 0)
    executions = after[("nv_inference_exec_count", "gpt")] - before.get(("nv_inference_exec_count", "gpt"), 0)
    assert requests == 640
    assert executions < 640 * 0.75, f"{executions} model executions for 640 requests: dynamic batching merged few"


def _infer_raw(server, inputs):
    client = http.InferenceServerClient(server.http)
    try:
        return client.infer("ensemble", inputs)
    finally:
        client.close()


def _tensor(name, array, triton_type):
    t = http.InferInput(name, list(array.shape), triton_type)
    t.set_data_from_numpy(array)
    return t


@pytest.mark.parametrize(("case", "message"), [
    ("wrong dtype", "max_output_len"),
    ("empty text", "text is empty"),
    ("length 0", "max_output_len=0"),
    ("length above positions", "max_position_embeddings"),
    ("top_p 0", "top_p=0.0"),
    ("top_p above 1", "top_p=1.5"),
])
def test_malformed_request_fails_alone_and_the_next_is_answered(gpt_server, case, message):
    text = _tensor("text", np.array([[b"hello there"]], dtype=np.object_), "BYTES")
    length = _tensor("max_output_len", np.array([[4]], dtype=np.int32), "INT32")
    extra = []
    if case == "wrong dtype":
        length = _tensor("max_output_len", np.array([[4.0]], dtype=np.float32), "FP32")
    elif case == "empty text":
        text = _tensor("text", np.array([[b""]], dtype=np.object_), "BYTES")
    elif case == "length 0":
        length = _tensor("max_output_len", np.array([[0]], dtype=np.int32), "INT32")
    elif case == "length above positions":
        length = _tensor("max_output_len", np.array([[64]], dtype=np.int32), "INT32")
    else:
        extra = [_tensor("top_p", np.array([[0.0 if case == "top_p 0" else 1.5]], dtype=np.float32), "FP32")]
    with pytest.raises(InferenceServerException) as failed:
        _infer_raw(gpt_server, [text, length, *extra])
    assert message in str(failed.value)
    good = _infer_raw(gpt_server, [_tensor("text", np.array([[b"hello there"]], dtype=np.object_), "BYTES"),
                                   _tensor("max_output_len", np.array([[4]], dtype=np.int32), "INT32")])
    assert good.as_numpy("output_length")[0, 0] == 4


def test_lambada_accuracy_equals_bignlp_evaluate(gpt_server, gpt_checkpoint, tmp_path):
    """Passages whose last word is the model's own greedy word (right) mixed with changed ones (wrong)."""
    loaded = load_model(gpt_checkpoint)
    tok = loaded.tokenizer
    passages = []
    starts = ["The baker woke before dawn and", "After the storm passed, the children", "He tuned the old guitar",
              "Mara packed her bag and", "The river ran past the mill where", "In the morning the market"]
    for i, start in enumerate(starts):
        ids = generate(loaded.model, [tok.encode(start)], max_new_tokens=6, greedy=True,
                       vocab_size=loaded.vocab_size).tokens[0]
        words = tok.decode(ids).split()
        word = words[0] if words else "end"
        passages.append(f"{start} {word if i % 2 == 0 else word + 'x'}")
    data = tmp_path / "data"
    data.mkdir()
    (data / "lambada.jsonl").write_text("".join(json.dumps({"text": p}) + "\n" for p in passages))

    served = subprocess.run([sys.executable, "-m", "bignlp_export", "accuracy", "--url", gpt_server.http,
                             "--data", str(data / "lambada.jsonl"), "--output", str(tmp_path / "acc.json")],
                            capture_output=True, text=True, timeout=120)
    assert served.returncode == 0, served.stderr
    ours = json.loads((tmp_path / "acc.json").read_text())
    evaluated = subprocess.run([str(Path(sys.executable).with_name("bignlp-evaluate")), "harness",
                                "--checkpoint", str(gpt_checkpoint), "--tasks", "lambada", "--data-dir", str(data),
                                "--output", str(tmp_path / "eval")], capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    theirs = json.loads((tmp_path / "eval" / "manifest.json").read_text())["summary"]["metrics"]["lambada"]["acc"]
    assert ours["accuracy"] == pytest.approx(theirs, abs=1e-12)
    assert 0 < ours["correct"] < ours["total"] == len(passages)
    assert f"lambada accuracy {ours['accuracy']:.4f}" in served.stdout


def test_bench_writes_csv_and_plot(gpt_server, tmp_path):
    result = subprocess.run([sys.executable, "-m", "bignlp_export", "bench", "--url", gpt_server.http,
                             "--input-len", "20", "--output-len", "4", "--batch-sizes", "1,2", "--concurrency", "1,2",
                             "--requests", "2", "--output", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = (tmp_path / "bench.csv").read_text().splitlines()
    assert rows[0].startswith("batch_size,concurrency,requests,input_len,output_len") and len(rows) == 5
    first = dict(zip(rows[0].split(","), rows[1].split(",")))
    assert first["input_len"] == "20" and float(first["latency_p50_ms"]) > 0
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"
