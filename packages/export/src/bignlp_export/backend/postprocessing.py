"""Triton model ``postprocessing``: generated token ids → text with the checkpoint's own tokenizer.

Inputs:
  output_ids     INT32 [-1]  new tokens, right-padded
  output_length  INT32 [1]   how many of output_ids are real
Outputs:
  output_text    BYTES [1]   their text (UTF-8; in a stream, the text of that step's token)
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import triton_python_backend_utils as pb_utils  # noqa: E402
from export_common import checkpoint_dir, load_tokenizer, parameters  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        self.tokenizer = load_tokenizer(checkpoint_dir(args, parameters(args)))

    def execute(self, requests):
        responses = []
        for request in requests:
            ids = pb_utils.get_input_tensor_by_name(request, "output_ids").as_numpy()
            lengths = pb_utils.get_input_tensor_by_name(request, "output_length").as_numpy().reshape(-1)
            texts = [self.tokenizer.decode(row[:n].tolist()).encode("utf-8") for row, n in zip(ids, lengths)]
            out = np.array(texts, dtype=np.object_).reshape(-1, 1)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("output_text", out)]))
        return responses
