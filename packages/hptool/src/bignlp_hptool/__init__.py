"""bignlp-hptool: the training side of the NeMo launcher's HP tool, for bignlp-train.

Model-size recommendation and time to train (:mod:`bignlp_hptool.sizing`), a base
``bignlp-train`` config for GPT-3, T5 or mT5 of any size (:mod:`bignlp_hptool.basecfg`), a
memory and step-time model per family and layout (:mod:`bignlp_hptool.perf`), its fidelity
against the seed README's published throughput (:mod:`bignlp_hptool.fidelity`), and the
training HP search (:mod:`bignlp_hptool.search`): a candidate grid filtered by the memory
model before anything is launched, ranked by predicted throughput, the best ones run as
short ``bignlp-train pretrain`` jobs. ``bignlp-hptool`` is the CLI over them.
"""

__version__ = "0.4.0"
