"""Train tests/data/spm/multi_unigram_8000.model on the multilingual slice (how the shipped model was made).

With dataprep's own trainer (``bignlp_dataprep.spm_train``) and the trainer options of the mT5
recipe (``mt5/download_mc4``'s ``train_tokenizer_args``): unigram, character coverage 0.99999,
T5's ids pad 0, eos 1, unk 2 and no bos; only the vocabulary is smaller (8,000 pieces for 1.2 MB
of text instead of 250,000). The .vocab file SentencePiece writes next to it is not shipped.
Run from the repository root: .venv/bin/python tests/data/spm/make_multi_spm.py
"""

import tempfile
from pathlib import Path

from bignlp_dataprep.spm_train import TrainTokenizerConfig, train_sentencepiece

here = Path(__file__).parent
corpus = here.parent / "corpus" / "demo-multi.jsonl.gz"
with tempfile.TemporaryDirectory() as tmp:
    cfg = TrainTokenizerConfig(input=(str(corpus),), model_prefix=f"{tmp}/multi_unigram_8000", model_type="unigram",
                               vocab_size=8000, character_coverage=0.99999, pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
    model, _vocab = train_sentencepiece(cfg)
    (here / model.name).write_bytes(model.read_bytes())
print(f"{here / model.name}: {(here / model.name).stat().st_size:,} bytes")
