"""The ``config.pbtxt`` of each model in an exported repository, as text a user can read and edit.

Every tensor is named for what it holds; each model's file begins with a comment block saying what
its inputs and outputs mean (Triton ignores ``#`` lines).
"""

from __future__ import annotations

from dataclasses import dataclass

# (name, Triton data type, dims, optional, meaning): the ensemble's request and response
ENSEMBLE_INPUTS = (
    ("text", "TYPE_STRING", "[ 1 ]", False, "the prompt (UTF-8)"),
    ("max_output_len", "TYPE_INT32", "[ 1 ]", False, "new tokens to generate (1 .. the model's positions)"),
    ("top_k", "TYPE_INT32", "[ 1 ]", True, "default 1 = greedy; 0 = no top-k cut; k > 1 samples the k best"),
    ("top_p", "TYPE_FP32", "[ 1 ]", True, "default 1.0; nucleus cut, in (0, 1]"),
    ("temperature", "TYPE_FP32", "[ 1 ]", True, "default 1.0; 0 = greedy"),
    ("random_seed", "TYPE_INT64", "[ 1 ]", True, "default 0; a sampled request's draws depend on it alone"),
    ("stop_words", "TYPE_STRING", "[ -1 ]", True, "a row ends once its text contains one of them"),
)
TOKEN_INPUTS = (
    ("input_ids", "TYPE_INT32", "[ -1 ]", False, "prompt token ids, right-padded"),
    ("input_length", "TYPE_INT32", "[ 1 ]", False, "how many of input_ids are the prompt's"),
)
TOKEN_OUTPUTS = (
    ("output_ids", "TYPE_INT32", "[ -1 ]", "new token ids (no end-of-text token), right-padded"),
    ("output_length", "TYPE_INT32", "[ 1 ]", "how many of output_ids are real"),
)
TEXT_OUTPUT = ("output_text", "TYPE_STRING", "[ 1 ]", "the new tokens' text")


@dataclass(frozen=True)
class Settings:
    """What every model of the repository shares."""

    model_name: str
    max_batch_size: int
    max_queue_delay_us: int
    instances: int
    instance_kind: str  # KIND_CPU, KIND_GPU or KIND_MODEL
    data_type: str
    num_threads: int
    devices_per_instance: int = 1
    tensor_parallel_size: int = 1


def _inputs(items) -> str:
    return "input [\n" + ",\n".join(
        f'  {{ name: "{n}" data_type: {t} dims: {d}{" optional: true" if opt else ""} }}'
        for n, t, d, opt, _ in items) + "\n]\n"


def _outputs(items) -> str:
    return "output [\n" + ",\n".join(f'  {{ name: "{n}" data_type: {t} dims: {d} }}' for n, t, d, _ in items) + "\n]\n"


def _doc(title: str, inputs, outputs) -> str:
    lines = [f"# {title}", "# inputs:"]
    lines += [f"#   {n:<15} {t[5:]:<6} {d:<8} {'(optional) ' if opt else ''}{m}" for n, t, d, opt, m in inputs]
    lines += ["# outputs:"]
    lines += [f"#   {n:<15} {t[5:]:<6} {d:<8} {m}" for n, t, d, m in outputs]
    return "\n".join(lines) + "\n"


def _parameters(params: dict[str, str]) -> str:
    return "".join(f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n' for k, v in params.items())


def _python_model(name: str, s: Settings, *, instances: int, kind: str, decoupled: bool = False) -> tuple[str, str]:
    """(head, tail) of a Python-backend model's config: name and batch size; batching, instances, transactions."""
    text = (f'name: "{name}"\nbackend: "python"\nmax_batch_size: {s.max_batch_size}\n')
    return text, (f"dynamic_batching {{ max_queue_delay_microseconds: {s.max_queue_delay_us} }}\n"
                  f"instance_group [ {{ count: {instances} kind: {kind} }} ]\n"
                  + ("model_transaction_policy { decoupled: true }\n" if decoupled else ""))


def tokenizer_config(name: str, s: Settings, checkpoint: str) -> str:
    """``preprocessing`` (text → ids) or ``postprocessing`` (ids → text)."""
    if name == "preprocessing":
        doc = _doc("preprocessing: text → token ids with the checkpoint's tokenizer", ENSEMBLE_INPUTS[:1],
                   [(n, t, d, m) for n, t, d, _, m in TOKEN_INPUTS])
        io = _inputs(ENSEMBLE_INPUTS[:1]) + _outputs([(n, t, d, m) for n, t, d, _, m in TOKEN_INPUTS])
    else:
        doc = _doc("postprocessing: token ids → text with the checkpoint's tokenizer",
                   [(n, t, d, False, m) for n, t, d, m in TOKEN_OUTPUTS], [TEXT_OUTPUT])
        io = _inputs([(n, t, d, False, m) for n, t, d, m in TOKEN_OUTPUTS]) + _outputs([TEXT_OUTPUT])
    head, tail = _python_model(name, s, instances=1, kind="KIND_CPU")
    return doc + head + io + tail + _parameters({"checkpoint": checkpoint})


def generator_config(name: str, s: Settings, checkpoint: str, *, decoupled: bool) -> str:
    """The model: ids → new ids, ``bignlp_models`` generation with a KV cache (decoupled: one response a step)."""
    inputs = TOKEN_INPUTS + ENSEMBLE_INPUTS[1:]
    title = (f"{name}: generation with a KV cache (bignlp_models), "
             + ("streamed: one response per generated step (decoupled, gRPC)" if decoupled else "one response"))
    head, tail = _python_model(name, s, instances=s.instances, kind=s.instance_kind, decoupled=decoupled)
    return (_doc(title, inputs, TOKEN_OUTPUTS) + head + _inputs(inputs) + _outputs(TOKEN_OUTPUTS) + tail
            + _parameters({"checkpoint": checkpoint, "data_type": s.data_type, "num_threads": str(s.num_threads),
                           "devices_per_instance": str(s.devices_per_instance),
                           "tensor_parallel_size": str(s.tensor_parallel_size)}))


def ensemble_config(name: str, model: str, s: Settings, *, streaming: bool) -> str:
    """text → preprocessing → ``model`` → postprocessing → text (and the ids)."""
    outputs = (TEXT_OUTPUT, *TOKEN_OUTPUTS)
    title = (f"{name}: text generation, preprocessing → {model} → postprocessing"
             + (" (streamed: gRPC stream, one response per generated step)" if streaming else ""))
    sampling = "".join(f'      input_map {{ key: "{n}" value: "{n}" }}\n' for n, *_ in ENSEMBLE_INPUTS[1:])
    steps = (
        '    {\n      model_name: "preprocessing"\n      model_version: -1\n'
        '      input_map { key: "text" value: "text" }\n'
        '      output_map { key: "input_ids" value: "_input_ids" }\n'
        '      output_map { key: "input_length" value: "_input_length" }\n    },\n'
        f'    {{\n      model_name: "{model}"\n      model_version: -1\n'
        '      input_map { key: "input_ids" value: "_input_ids" }\n'
        '      input_map { key: "input_length" value: "_input_length" }\n' + sampling +
        '      output_map { key: "output_ids" value: "output_ids" }\n'
        '      output_map { key: "output_length" value: "output_length" }\n    },\n'
        '    {\n      model_name: "postprocessing"\n      model_version: -1\n'
        '      input_map { key: "output_ids" value: "output_ids" }\n'
        '      input_map { key: "output_length" value: "output_length" }\n'
        '      output_map { key: "output_text" value: "output_text" }\n    }\n')
    return (_doc(title, ENSEMBLE_INPUTS, outputs) + f'name: "{name}"\nplatform: "ensemble"\n'
            f"max_batch_size: {s.max_batch_size}\n" + _inputs(ENSEMBLE_INPUTS) + _outputs(outputs)
            + "ensemble_scheduling {\n  step [\n" + steps + "  ]\n}\n")
