"""bignlp-train: pretrain GPT-3-style models on Megatron datasets, resumably.

``bignlp-train pretrain --config gpt3/tiny-cpu model.data.data_prefix=[1.0,DIR/NAME_text_document]``
reads a dataset artifact made by bignlp-dataprep and writes ``gpt-checkpoint``
artifacts under the run directory. Library entry point: ``bignlp_train.trainer.pretrain``.
"""

__version__ = "0.6.0"
