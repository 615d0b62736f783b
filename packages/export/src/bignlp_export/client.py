"""Requests to a served repository: text through the ensemble over HTTP, a token stream over gRPC.

The tensor names are the ensemble's (``pbtxt.ENSEMBLE_INPUTS``); sampling inputs left at None are
not sent, so the server's defaults apply (greedy).
"""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from bignlp_contracts import InputError

_TYPES = {"top_k": ("INT32", np.int32), "top_p": ("FP32", np.float32), "temperature": ("FP32", np.float32),
          "random_seed": ("INT64", np.int64)}


def host_port(url: str) -> str:
    """``http://host:port`` or ``host:port`` → ``host:port`` (what tritonclient takes)."""
    return url.split("://", 1)[-1].rstrip("/")


@dataclass(frozen=True)
class Answer:
    texts: list[str]
    ids: list[list[int]]


def make_inputs(module, texts: Sequence[str], max_output_len: int | Sequence[int], *, top_k: int | None = None,
                top_p: float | None = None, temperature: float | None = None, random_seed: int | None = None,
                stop_words: Sequence[str] | None = None) -> list:
    """The ensemble's inputs for a batch of ``texts`` (``module``: tritonclient.http or tritonclient.grpc)."""
    batch = len(texts)

    def tensor(name, array, triton_type):
        t = module.InferInput(name, list(array.shape), triton_type)
        t.set_data_from_numpy(array)
        return t

    lengths = [max_output_len] * batch if isinstance(max_output_len, int) else list(max_output_len)
    inputs = [tensor("text", np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_), "BYTES"),
              tensor("max_output_len", np.array(lengths, dtype=np.int32).reshape(batch, 1), "INT32")]
    for name, value in (("top_k", top_k), ("top_p", top_p), ("temperature", temperature),
                        ("random_seed", random_seed)):
        if value is not None:
            triton_type, dtype = _TYPES[name]
            inputs.append(tensor(name, np.full((batch, 1), value, dtype=dtype), triton_type))
    if stop_words:
        words = np.array([[w.encode("utf-8") for w in stop_words]] * batch, dtype=np.object_)
        inputs.append(tensor("stop_words", words, "BYTES"))
    return inputs


def http_client(url: str, *, timeout_s: float = 300.0):
    """A tritonclient HTTP client of ``url``; InputError (one line) when no ready server answers there."""
    import tritonclient.http as http

    client = http.InferenceServerClient(host_port(url), connection_timeout=timeout_s, network_timeout=timeout_s)
    with server_errors(url):
        if not client.is_server_ready():
            client.close()
            raise InputError(f"the Triton server at {url} is not ready (its models are still loading, or failed)")
    return client


@contextlib.contextmanager
def server_errors(url: str) -> Iterator[None]:
    """A refused connection or a failed request as one InputError line instead of a client traceback."""
    from tritonclient.utils import InferenceServerException

    try:
        yield
    except InferenceServerException as exc:
        raise InputError(f"{url}: {exc.message() or exc}") from None
    except OSError as exc:
        raise InputError(f"no Triton server answers at {url} ({exc.__class__.__name__}: {exc})",
                         hint="start one with: bignlp-export serve --repository REPO") from None


def generate(client, texts: Sequence[str], max_output_len: int | Sequence[int], *, model: str = "ensemble",
             **sampling) -> Answer:
    """New text and token ids for each of ``texts``, one request (the texts are its batch)."""
    import tritonclient.http as http

    result = client.infer(model, make_inputs(http, texts, max_output_len, **sampling))
    out = result.as_numpy("output_text").reshape(-1)
    ids = result.as_numpy("output_ids")
    lengths = result.as_numpy("output_length").reshape(-1)
    return Answer([t.decode("utf-8") for t in out], [row[:n].tolist() for row, n in zip(ids, lengths)])


def tokenize(client, texts: Sequence[str]) -> list[list[int]]:
    """The served tokenizer's ids of each text (the repository's ``preprocessing`` model)."""
    import tritonclient.http as http

    t = http.InferInput("text", [len(texts), 1], "BYTES")
    t.set_data_from_numpy(np.array([[x.encode("utf-8")] for x in texts], dtype=np.object_))
    result = client.infer("preprocessing", [t])
    ids, lengths = result.as_numpy("input_ids"), result.as_numpy("input_length").reshape(-1)
    return [row[:n].tolist() for row, n in zip(ids, lengths)]


def stream(url: str, text: str, max_output_len: int, *, model: str = "ensemble_stream", timeout_s: float = 300.0,
           **sampling) -> Iterator[tuple[str, list[int]]]:
    """(text, ids) of each generated step of one prompt, as the server sends them (gRPC, decoupled)."""
    import tritonclient.grpc as grpc

    replies: queue.Queue = queue.Queue()
    client = grpc.InferenceServerClient(host_port(url))
    client.start_stream(callback=lambda result, error: replies.put((result, error)))
    try:
        client.async_stream_infer(model, make_inputs(grpc, [text], max_output_len, **sampling),
                                  enable_empty_final_response=True)
        while True:
            try:
                result, error = replies.get(timeout=timeout_s)
            except queue.Empty:
                raise InputError(f"no streamed response from {model} within {timeout_s:.0f} s") from None
            if error is not None:
                raise InputError(f"{model}: {error}")
            response = result.get_response()
            if response.parameters.get("triton_final_response") and response.parameters[
                    "triton_final_response"].bool_param and not response.outputs:
                return
            ids = result.as_numpy("output_ids")
            n = int(result.as_numpy("output_length").reshape(-1)[0])
            yield result.as_numpy("output_text").reshape(-1)[0].decode("utf-8"), ids[0, :n].tolist()
            if response.parameters.get("triton_final_response") and response.parameters[
                    "triton_final_response"].bool_param:
                return
    finally:
        client.stop_stream()
        client.close()


def metrics(url: str, *, timeout_s: float = 10.0) -> dict[tuple[str, str], float]:
    """Triton's Prometheus metrics: (metric name, model) → value (summed over versions)."""
    import re
    import urllib.request

    if "://" not in url:
        url = f"http://{url}"
    if not url.rstrip("/").endswith("/metrics"):
        url = url.rstrip("/") + "/metrics"
    with urllib.request.urlopen(url, timeout=timeout_s) as reply:
        text = reply.read().decode()
    values: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        m = re.match(r'^(\w+)\{([^}]*)\}\s+([0-9.eE+-]+)$', line)
        if not m:
            continue
        model = re.search(r'model="([^"]*)"', m.group(2))
        key = (m.group(1), model.group(1) if model else "")
        values[key] = values.get(key, 0.0) + float(m.group(3))
    return values
