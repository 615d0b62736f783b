"""Triton model ``<name>`` (and ``<name>_stream``, decoupled): ``bignlp_models`` generation with a KV cache.

Inputs (per request, batched on the first dimension):
  input_ids       INT32 [-1]  prompt ids, right-padded (from ``preprocessing``)
  input_length    INT32 [1]   how many of input_ids are the prompt's
  max_output_len  INT32 [1]   new tokens to generate: 1 .. the model's positions (with the prompt, for GPT)
  top_k           INT32 [1]   optional, default 1: 1 is greedy (argmax), 0 no top-k cut, k > 1 sample the k best
  top_p           FP32  [1]   optional, default 1.0: nucleus cut, in (0, 1]
  temperature     FP32  [1]   optional, default 1.0: 0 is greedy
  random_seed     INT64 [1]   optional, default 0: a sampled request's draws are a function of its seed
  stop_words      BYTES [-1]  optional: a row ends once its text contains one of them (kept in the output)
Outputs:
  output_ids      INT32 [-1]  the new tokens (without the end-of-text token that ended a row), right-padded
  output_length   INT32 [1]   how many of output_ids are real

Greedy rows of every request in a dynamic batch are generated together; a sampled request runs on
its own, so that its seed alone decides its tokens. A malformed request gets an error response of
its own; the others in the batch are answered. In the decoupled (streaming) model each generated
step is one response per request (output_length 0 for rows that already ended), then a final flag.

Parameters (config.pbtxt): ``devices_per_instance`` N spreads the layers over N devices (pipeline
placement, one process); ``tensor_parallel_size`` N splits every matrix over N devices, one process
each: this instance is rank 0 and starts N-1 workers (``export_tp.py``), which ``finalize`` stops.
Streaming works the same with both. A dead worker fails the requests of its instance with an error.
"""

import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import triton_python_backend_utils as pb_utils  # noqa: E402
from export_common import checkpoint_dir, error, optional, parameters, strings  # noqa: E402
from export_tp import DTYPES, Framing, Row, TensorParallelGroup, generate_rows  # noqa: E402

from bignlp_models import PromptError, load_model  # noqa: E402
from bignlp_models.generate import decoding_for  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        params = parameters(args)
        threads = int(params.get("num_threads", "0") or 0)
        if threads > 0:
            torch.set_num_threads(threads)
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(json.loads(args["model_config"]))
        # the instance's devices: its own, then the next ones when its layers are spread over several (PP) or
        # its matrices split over several (TP: one process each, this one rank 0; export_tp.py)
        spread = int(params.get("devices_per_instance", "1") or 1)
        tp = int(params.get("tensor_parallel_size", "1") or 1)
        if tp > 1 and spread > 1:
            raise ValueError(f"tensor_parallel_size={tp} with devices_per_instance={spread}: an instance splits its "
                             f"matrices (TP) or spreads its layers (PP), not both")
        count = max(tp, spread)
        devices = ["cpu"] * count
        if torch.cuda.is_available() and args.get("model_instance_kind") in ("GPU", "MODEL"):
            first, visible = int(args.get("model_instance_device_id") or 0), torch.cuda.device_count()
            devices = [f"cuda:{(first + i) % visible}" for i in range(count)]
        dtype, verify = params["data_type"], params.get("verify", "size")
        self.tp = None
        if tp > 1:
            self.tp = TensorParallelGroup(str(checkpoint_dir(args, params)), devices, dtype=dtype, verify=verify,
                                          num_threads=threads, timeout_s=float(params.get("tp_timeout_s", "300")))
            self.loaded = self.tp.loaded
        else:
            self.loaded = load_model(checkpoint_dir(args, params), dtype=DTYPES[dtype], verify=verify,
                                     **({"device": devices[0]} if spread == 1 else {"devices": devices}))
        self.model, self.device = self.loaded.model, torch.device(devices[0])
        self.framing = Framing.of(self.loaded)
        self.end_id, self.pad_id, self.start_id = self.framing.end_id, self.framing.pad_id, self.framing.start_id
        self.tokenizer = self.loaded.tokenizer

    def finalize(self):
        if self.tp is not None:
            self.tp.close()  # the workers told to exit and joined (killed after a bounded wait)
            self.tp = None

    # --- requests → rows -------------------------------------------------------------------
    def _rows(self, index, request):
        ids = pb_utils.get_input_tensor_by_name(request, "input_ids").as_numpy()
        lengths = pb_utils.get_input_tensor_by_name(request, "input_length").as_numpy().reshape(-1)
        batch = ids.shape[0]

        def column(name, default, cast):
            values = optional(request, name)
            if values is None:
                return [default] * batch
            return [cast(v) for v in values.reshape(batch, -1)[:, 0]]

        max_new = column("max_output_len", None, int)
        top_k, top_p = column("top_k", 1, int), column("top_p", 1.0, float)
        temperature, seed = column("temperature", 1.0, float), column("random_seed", 0, int)
        stops = optional(request, "stop_words")
        stop_words = [[w for w in strings(stops.reshape(batch, -1)[i]) if w] for i in range(batch)] \
            if stops is not None else [[] for _ in range(batch)]
        rows = []
        for i in range(batch):
            if max_new[i] is None or max_new[i] < 1:
                raise ValueError(f"max_output_len={max_new[i]}: must be at least 1")
            if not 0.0 < top_p[i] <= 1.0:
                raise ValueError(f"top_p={top_p[i]}: must be in (0, 1]")
            if top_k[i] < 0:
                raise ValueError(f"top_k={top_k[i]}: must be at least 0 (0: no top-k cut)")
            if temperature[i] < 0.0:
                raise ValueError(f"temperature={temperature[i]}: must be at least 0 (0: greedy)")
            prompt = [int(t) for t in ids[i, :int(lengths[i])]]
            # the model's own checks (empty prompt, positions, vocabulary), one prompt at a time
            decoding_for(self.model, decoder_start_token_id=self.start_id).batch(
                [prompt], max_new_tokens=max_new[i], pad_id=self.pad_id, vocab_size=self.loaded.vocab_size,
                device=torch.device("cpu"))
            greedy = temperature[i] == 0.0 or top_k[i] == 1
            rows.append(Row(index, prompt, max_new[i], greedy, temperature[i], top_k[i], top_p[i], seed[i],
                            stop_words[i]))
        return rows

    # --- generation ----------------------------------------------------------------------------
    def _generate(self, rows, on_step=None):
        """New tokens of each row (all rows share their sampling: greedy, or one request's settings)."""
        if self.tp is not None:
            return self.tp.generate(rows, self.framing, on_step)
        return generate_rows(self.loaded, rows, self.framing, self.device, on_step)

    def execute(self, requests):
        rows, failed = [], {}
        for index, request in enumerate(requests):
            try:
                rows.extend(self._rows(index, request))
            except (PromptError, ValueError) as exc:
                failed[index] = str(exc)
        rows = [r for r in rows if r.request not in failed]
        groups = {}
        for position, row in enumerate(rows):
            key = ("greedy",) if row.greedy else ("request", row.request)
            groups.setdefault(key, []).append(position)
        if self.decoupled:
            return self._execute_stream(requests, rows, groups, failed)
        produced = [None] * len(rows)
        for positions in groups.values():
            try:
                for position, tokens in zip(positions, self._generate([rows[p] for p in positions])):
                    produced[position] = tokens
            except RuntimeError as exc:  # a tensor-parallel worker gone: these requests fail, with why
                if self.tp is None:
                    raise
                for p in positions:
                    failed.setdefault(rows[p].request, str(exc))
        responses = []
        for index in range(len(requests)):
            if index in failed:
                responses.append(error(failed[index]))
                continue
            mine = [produced[p] for p, r in enumerate(rows) if r.request == index]
            responses.append(pb_utils.InferenceResponse(output_tensors=_outputs(mine)))
        return responses

    def _execute_stream(self, requests, rows, groups, failed):
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        senders = [r.get_response_sender() for r in requests]
        for index, message in failed.items():
            senders[index].send(error(message), flags=final)
        for positions in groups.values():
            group = [rows[p] for p in positions]
            requests_here = sorted({r.request for r in group})

            def send(new, group=group, requests_here=requests_here):
                for index in requests_here:
                    mine = [[t] if t is not None else [] for t, r in zip(new, group) if r.request == index]
                    if any(mine):
                        senders[index].send(pb_utils.InferenceResponse(output_tensors=_outputs(mine)))

            try:
                self._generate(group, on_step=send)
            except RuntimeError as exc:  # a tensor-parallel worker gone: these requests end with why
                if self.tp is None:
                    raise
                for index in requests_here:
                    if index not in failed:
                        failed[index] = str(exc)
                        senders[index].send(error(str(exc)), flags=final)
        for index in range(len(requests)):
            if index not in failed:
                senders[index].send(flags=final)
        return None


def _outputs(rows):
    width = max([len(r) for r in rows] + [1])
    ids = np.zeros((len(rows), width), dtype=np.int32)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
    lengths = np.array([[len(r)] for r in rows], dtype=np.int32)
    return [pb_utils.Tensor("output_ids", ids), pb_utils.Tensor("output_length", lengths)]
