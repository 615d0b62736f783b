"""The HP tool end to end: size and time → base config → (training search) → results."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from bignlp_contracts import atomic_write_text, save_config

from .basecfg import default_layout, model_shape
from .config import HPToolConfig
from .hardware import gpu_kind
from .results import result_rows, write_results
from .search import admit, claim_logs_dir, run_candidates
from .sizing import SizeEstimate, size_and_time
from .trainyaml import base_train_config, candidate_train_config, write_yaml


@dataclass
class ToolResult:
    """What a run produced: the estimate, the base config, and (with a search) the candidates and result files."""

    estimate: SizeEstimate
    base_config_path: Path
    candidates: list
    files: dict


def base_config(cfg: HPToolConfig, estimate: SizeEstimate) -> tuple[dict, object, dict]:
    """(bignlp-train config, model shape, layout) of the base config for the estimated size."""
    ts = cfg.train_settings
    kind = gpu_kind(ts)
    layout = default_layout(cfg.model_type, estimate.model_size_in_b, ts.gpu_memory_gb)
    shape = model_shape(cfg.model_type, estimate.model_size_in_b, ts.vocab_size, ts.seq_length, layout["pp"])
    train = base_train_config(cfg.model_type, shape, size_in_b=estimate.model_size_in_b, layout=layout,
                              num_nodes=ts.num_nodes, gpus_per_node=ts.gpus_per_node,
                              days=estimate.max_training_days, num_tokens_in_b=ts.num_tokens_in_b,
                              precision=kind.precision, accelerator=kind.accelerator)
    return train, shape, layout


def run_hp_tool(cfg: HPToolConfig, *, dry_run: bool = False, log=print) -> ToolResult:
    """Recommend/estimate, write the base config, and run the training search when asked (``dry_run``: no launches)."""
    ts = cfg.train_settings
    logs = cfg.logs_dir
    kind = gpu_kind(ts)
    estimate = size_and_time(cfg.model_type, ts)
    for line in estimate.lines(cfg.model_type):
        log(line)
    train, shape, _ = base_config(cfg, estimate)
    if cfg.run_inference_hp_search and not cfg.inference_settings.checkpoint:
        from .inference import run_inference_search

        run_inference_search(cfg, logs, log)  # says what is missing, in one line, before anything runs
    if cfg.run_training_hp_search:
        gbs = train["model"]["global_batch_size"]
        candidates = admit(cfg, shape, kind, gbs)  # refuses before anything is written or launched
        claim_logs_dir(cfg, logs)
    else:
        candidates = []
        logs.mkdir(parents=True, exist_ok=True)
    save_config(cfg, logs / "hptool_config.yaml")
    base_path = logs / f"base_cfg_{estimate.model_size_in_b:g}b.yaml"
    write_yaml(base_path, train, header=f"bignlp-hptool base config: {cfg.model_type} {estimate.model_size_in_b:g}B, "
                                        f"{shape.num_parameters / 1e9:.3f}B parameters by the family's count\n"
                                        f"bignlp-train pretrain --config {base_path.name} "
                                        "model.data.data_prefix=[1.0,DIR/NAME_text_document]")
    log(f"base config: {base_path} ({shape.num_parameters / 1e9:.3f}B parameters, {shape.num_layers} layers, "
        f"hidden {shape.hidden_size})")
    summary = {"model_type": cfg.model_type, "model_size_in_b": estimate.model_size_in_b,
               "recommended": estimate.recommended, "max_training_days": estimate.max_training_days,
               "num_parameters": shape.num_parameters, "base_config": base_path.name}
    files: dict = {"base_config": base_path}
    if cfg.run_training_hp_search:
        admitted = sum(c.status == "admitted" for c in candidates)
        log(f"candidates: {len(candidates)} valid layouts, {admitted} admitted by the memory model "
            f"({kind.name}, {ts.gpu_memory_gb:g} GB less {ts.memory_margin:.0%}), "
            f"{len(candidates) - admitted} predicted out of memory")
        for c in candidates:
            cand = candidate_train_config(train, c.layout, num_nodes=c.nodes, gpus_per_node=ts.gpus_per_node,
                                          max_steps=ts.max_steps_per_run, max_minutes=ts.max_minutes_per_run,
                                          run_dir=logs / "training_logs" / c.name, data_prefix=ts.data_prefix,
                                          wandb=cfg.wandb)
            write_yaml(logs / "candidate_configs" / f"{c.name}.yaml", cand,
                       header=f"{c.status}: predicted {c.prediction.memory_gb:.2f} GB, "
                              f"{c.prediction.step_time_s:.3f} s/step {c.reason}")
        if not dry_run:
            (logs / "training_logs").mkdir(exist_ok=True)
            run_candidates(cfg, candidates, train, logs, log)
        rows = result_rows(candidates, shape, model_type=cfg.model_type, size_in_b=estimate.model_size_in_b,
                           gpus_per_node=ts.gpus_per_node)
        files.update(write_results(rows, logs / "final_results", top_n=ts.output_top_n,
                                   title=f"{cfg.model_type} {estimate.model_size_in_b:g}B on {kind.name}"))
        measured = [c for c in candidates if c.measured_step_time_s]
        best = (min(measured, key=lambda c: c.measured_step_time_s) if measured
                else next((c for c in candidates if c.status in ("admitted", "not-launched")), None))
        if best is not None:
            full = candidate_train_config(train, best.layout, num_nodes=ts.num_nodes, gpus_per_node=ts.gpus_per_node,
                                          max_steps=train["trainer"]["max_steps"], max_minutes=1, run_dir=Path("."),
                                          data_prefix=None)
            full["trainer"] = train["trainer"]
            full["exp_manager"] = train["exp_manager"]
            full["run"] = train["run"]
            # the full run's DP: GBS must stay a multiple of MBS x DP there
            dp_full = max(1, ts.num_nodes * ts.gpus_per_node // (best.layout.tp * best.layout.pp))
            unit = best.layout.mbs * dp_full
            full["model"]["global_batch_size"] = max(unit, round(train["model"]["global_batch_size"] / unit) * unit)
            how = "fastest measured" if measured else "best predicted (nothing measured)"
            opt = logs / "final_results" / f"optimal_config_{estimate.model_size_in_b:g}b_{ts.num_nodes}nodes.yaml"
            write_yaml(opt, full, header=f"bignlp-hptool: {how} candidate {best.name}")
            files["optimal_config"] = opt
            summary["optimal"] = best.name
            log(f"optimal config ({how}): {best.name} -> {opt}")
        for key in ("csv", "top", "png"):
            log(f"{key}: {files[key]}")
    if cfg.run_inference_hp_search and not dry_run:
        from .inference import run_inference_search

        files.update(run_inference_search(cfg, logs, log))
    atomic_write_text(logs / "final_results" / "summary.json" if cfg.run_training_hp_search
                      else logs / "summary.json", json.dumps(summary, indent=2) + "\n")
    return ToolResult(estimate=estimate, base_config_path=base_path, candidates=candidates, files=files)


def recommend(cfg: HPToolConfig) -> SizeEstimate:
    """Size (when null) and time to train only."""
    return size_and_time(cfg.model_type, cfg.train_settings)


__all__ = ["ToolResult", "base_config", "recommend", "replace", "run_hp_tool"]
