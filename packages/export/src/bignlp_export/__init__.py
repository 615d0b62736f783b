"""bignlp-export: a checkpoint as a Triton model repository (tokenizer → model → detokenizer ensemble), served
by a real ``tritonserver``, with the seed's accuracy check (lambada) and latency benchmark.

- ``repository``: ``export_repository`` (the repository, a ``triton-repository`` artifact), ``check_repository``.
- ``pbtxt``: each model's ``config.pbtxt``; ``backend/``: the Python-backend models copied into it.
- ``server``: ``find_triton`` (the user's server or nvidia-pytriton's), ``TritonServer`` (start, wait, stop).
- ``client``: requests through the ensemble; ``accuracy``: lambada last-word accuracy; ``bench``: latency.
"""

__version__ = "0.3.0"
