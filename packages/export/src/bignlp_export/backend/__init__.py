"""The Triton Python-backend models, copied into an exported repository as ``<model>/1/model.py``.

They run in Triton's Python stub (the server's environment: ``.venv-triton``), never in this
package's process: they import ``triton_python_backend_utils``, numpy and our libraries
(``bignlp_models``, ``bignlp_tokenizers``) only, never ``bignlp_export``.
"""
