"""Rules that involve more than one setting, checked after pydantic has typed each one.

Kept outside pydantic's validators so that all of them are reported at once, one line each.
Many mirror a rule TRL enforces only when the trainer is built (minutes into a run, after the
model loaded): the sentence says so ("TRL's rule").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dpo_cli.config.algorithms import ALGORITHMS, algorithm_of, reference_free

if TYPE_CHECKING:
    from dpo_cli.config.schema import RunConfig


def cross_field_problems(cfg: RunConfig) -> list[str]:
    """Rules that involve more than one section, each as one readable sentence.

    Kept outside pydantic's validators so that all of them are reported at once, one line each.
    """
    problems = []
    t = cfg.training
    if cfg.quantization is not None and cfg.lora is None and not cfg.model.adapter:
        problems.append(
            "`quantization` without `lora`: 4-bit weights cannot be trained directly; add a `lora:` section"
        )
    if cfg.model.adapter and cfg.lora is not None:
        problems.append(
            "`model.adapter` continues an existing adapter with its own settings; remove the `lora:` section "
            "(a second, new adapter would silently sit beside it)"
        )
    if cfg.algorithm == "dpo":
        problems += dpo_loss_problems(cfg)
    else:
        problems += algorithm_problems(cfg)
    if cfg.data.unpair and cfg.algorithm != "kto":
        problems.append("`data.unpair` splits pairs into unpaired rows for KTO; set `algorithm: kto` or remove it")
    if t.bf16 and t.fp16:
        problems.append("`training.bf16` and `training.fp16` are both true; pick one")
    if cfg.reference.kind == "none" and algorithm_of(cfg).reference:
        problems.append(
            f"`reference.kind: none` needs a reference-free algorithm ({', '.join(reference_free())}); `{cfg.algorithm}` compares "
            "against a reference (use `training.precompute_ref_log_probs: true` to avoid keeping one in memory)"
        )
    if cfg.sweep.select_by == "win_rate" and (cfg.eval.judge is None or not cfg.eval.generate):
        problems.append("`sweep.select_by: win_rate` needs a judge: set `eval.judge` (and keep `eval.generate` on)")
    if t.max_steps == 0:
        problems.append("`training.max_steps` is 0: nothing would be trained")
    if (
        cfg.launch.deepspeed is not None
        and cfg.launch.deepspeed.zero_stage == 2
        and (cfg.launch.deepspeed.offload_param != "none")
    ):
        problems.append("`launch.deepspeed.offload_param` needs `zero_stage: 3`")
    ds = cfg.launch.deepspeed
    zero3 = ds is not None and ds.zero_stage == 3
    if zero3 and cfg.mode != "full" and t.gradient_checkpointing:
        gc_kwargs = getattr(t, "gradient_checkpointing_kwargs", None) or {}
        if isinstance(gc_kwargs, dict) and gc_kwargs.get("use_reentrant") is False:
            problems.append(
                "LoRA under ZeRO-3 with gradient checkpointing needs re-entrant checkpointing (the non-re-entrant "
                "kind gets no gradients for the sharded adapters); remove `use_reentrant: false` from "
                "`training.gradient_checkpointing_kwargs`"
            )
    if ds is not None and ds.offload_optimizer == "cpu" and not t.optim.startswith("adamw"):
        problems.append(
            f"`launch.deepspeed.offload_optimizer: cpu` runs DeepSpeed's own CPU AdamW; `training.optim: {t.optim}` "
            "would be ignored (use an adamw optimizer or no offload)"
        )
    if cfg.quantization is not None and cfg.launch.deepspeed is not None and cfg.launch.deepspeed.zero_stage == 3:
        compute = cfg.quantization.bnb_4bit_compute_dtype
        if cfg.quantization.bnb_4bit_quant_storage != compute:
            problems.append(
                f"QLoRA under ZeRO-3 shards the packed 4-bit weights with the other parameters, so "
                f"`quantization.bnb_4bit_quant_storage` must equal `bnb_4bit_compute_dtype` ({compute})"
            )
    return problems


# TRL's f-DPO reparameterisation only cancels log Z(x) in a chosen-minus-rejected difference.
F_DIVERGENCE_LOSSES = frozenset({"sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop", "sft"})


def dpo_loss_problems(cfg: RunConfig) -> list[str]:
    """TRL 1.16's `DPOConfig` / `DPOTrainer.__init__` rules on loss combinations, checked at config time."""
    problems = []
    t = cfg.training
    losses = cfg.loss_types()
    if t.loss_weights is not None and len(t.loss_weights) != len(losses):
        problems.append(
            f"`training.loss_weights` has {len(t.loss_weights)} values for {len(losses)} loss types (TRL needs one each)"
        )
    if len(set(losses)) != len(losses):
        problems.append(f"`training.loss_type` lists a loss twice ({losses}); give it one entry and a larger weight")
    if "exo_pair" in losses and t.label_smoothing == 0.0:
        problems.append("`loss_type: exo_pair` needs `label_smoothing` > 0 (TRL's rule; the EXO paper uses 1e-3)")
    smoothing_losses = {"robust", "exo_pair", "aot", "aot_unpaired"}
    if t.label_smoothing > 0 and not smoothing_losses & set(losses):
        problems.append(
            f"`training.label_smoothing` is {t.label_smoothing} but only the {sorted(smoothing_losses)} losses read it; "
            f"with {losses} it would be ignored (TRL 1.16's sigmoid loss no longer reads it; for conservative DPO "
            "on noisy labels use `loss_type: robust`)"
        )
    divergence = getattr(t, "f_divergence_type", None) or "reverse_kl"
    if divergence != "reverse_kl" and not set(losses) <= F_DIVERGENCE_LOSSES:
        problems.append(
            f"`training.f_divergence_type: {divergence}` works only with the losses {sorted(F_DIVERGENCE_LOSSES)} "
            f"(TRL's rule: the f-divergence term cancels only in the chosen-minus-rejected difference); "
            f"{sorted(set(losses) - F_DIVERGENCE_LOSSES)} need the default `reverse_kl`"
        )
    if getattr(t, "use_weighting", None) and {"aot", "aot_unpaired"} & set(losses):
        problems.append(
            "`training.use_weighting` (WPO) cannot be combined with `aot`/`aot_unpaired` (TRL's rule: those losses "
            "sort the batch, which misaligns the per-pair weights)"
        )
    problems += sync_ref_problems(cfg)
    return problems


def sync_ref_problems(cfg: RunConfig) -> list[str]:
    """TRL's `sync_ref_model` (TR-DPO) rules, shared by DPO and KTO."""
    if not getattr(cfg.training, "sync_ref_model", None):
        return []
    problems = []
    if cfg.mode != "full":
        problems.append(
            "`training.sync_ref_model` is not supported with LoRA (TRL's rule: with PEFT the reference is the policy "
            "with its adapters disabled, so there is no reference model to update); train fully, or drop it"
        )
    if cfg.training.precompute_ref_log_probs:
        problems.append(
            "`training.sync_ref_model` and `precompute_ref_log_probs` exclude each other (TRL's rule: precomputed "
            "log-probs assume a fixed reference, which syncing keeps changing)"
        )
    return problems


def algorithm_problems(cfg: RunConfig) -> list[str]:
    """Rules of the non-DPO algorithms (TRL's own, checked at config time), one sentence each."""
    problems: list[str] = []
    t = cfg.training
    name = cfg.algorithm
    if not ALGORITHMS[name].reference:
        if cfg.reference.kind != "none":
            problems.append(
                f"`algorithm: {name}` is reference-free and loads no reference model; remove the `reference:` "
                f"section or set `reference.kind: none` (found `{cfg.reference.kind}`)"
            )
        if t.precompute_ref_log_probs:
            problems.append(
                f"`algorithm: {name}` has no reference model: `training.precompute_ref_log_probs` does not apply"
            )
    if name == "kto":
        if t.loss_type == "kto":
            sampling = getattr(t, "train_sampling_strategy", None)
            if sampling not in (None, "sequential"):
                problems.append(
                    f"`training.train_sampling_strategy: {sampling}` breaks KTO's KL estimate (TRL's rule: the KL "
                    "completions are matched with their neighbours in a fixed-order batch); keep `sequential` or "
                    "use `loss_type: apo_zero_unpaired`"
                )
            if t.per_device_train_batch_size <= 1:
                problems.append(
                    "`loss_type: kto` needs `training.per_device_train_batch_size` > 1 (TRL's rule: with one row per "
                    "batch the KL estimate equals the row's own reward)"
                )
        problems += sync_ref_problems(cfg)
    if name in ("cpo", "simpo"):
        loss = t.loss_type
        if loss in ("hinge", "ipo") and t.label_smoothing > 0:
            problems.append(
                f"`training.label_smoothing` is ignored by CPO's `{loss}` loss (TRL only warns); set it to 0 or use "
                "`loss_type: sigmoid`"
            )
        if loss == "alphapo" and "cpo_alpha" in t.model_fields_set and t.cpo_alpha != 0:
            problems.append("`loss_type: alphapo` sets `cpo_alpha` to 0 (TRL's rule); remove `training.cpo_alpha`")
        if "simpo_gamma" in t.model_fields_set and loss not in ("simpo", "alphapo"):
            problems.append(f"`training.simpo_gamma` is only read by the simpo loss; `loss_type: {loss}` ignores it")
    return problems
