"""Triton model ``preprocessing``: text → token ids with the checkpoint's own tokenizer.

Inputs (per request, batched on the first dimension):
  text           BYTES [1]   the prompt (UTF-8); empty text is refused for that request
Outputs:
  input_ids      INT32 [-1]  the prompt's ids, right-padded with 0 to the longest row of the request
  input_length   INT32 [1]   how many of input_ids are the prompt's
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import triton_python_backend_utils as pb_utils  # noqa: E402
from export_common import checkpoint_dir, error, load_tokenizer, parameters, strings  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        self.tokenizer = load_tokenizer(checkpoint_dir(args, parameters(args)))

    def execute(self, requests):
        responses = []
        for request in requests:
            texts = strings(pb_utils.get_input_tensor_by_name(request, "text").as_numpy())
            if any(not t for t in texts):
                responses.append(error("text is empty: give a prompt of at least one character"))
                continue
            ids = self.tokenizer.encode_batch(texts)
            if any(not row for row in ids):
                responses.append(error("text encodes to no tokens: give a prompt with some text"))
                continue
            width = max(len(row) for row in ids)
            padded = np.zeros((len(ids), width), dtype=np.int32)
            for i, row in enumerate(ids):
                padded[i, :len(row)] = row
            lengths = np.array([[len(row)] for row in ids], dtype=np.int32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("input_ids", padded), pb_utils.Tensor("input_length", lengths)]))
        return responses
