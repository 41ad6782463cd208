"""The config schema: the single source of truth for every setting.

Types, defaults, ranges and descriptions live here once. The configuration reference page
(`docs/reference/configuration.md`) and `dpo config schema` (JSON Schema for editors) are generated
from these models.

Section names follow the libraries they feed: `training:` uses `trl.DPOConfig` names,
`lora:` uses `peft.LoraConfig` names, `quantization:` uses `transformers.BitsAndBytesConfig`
names, so users never learn a second vocabulary.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from dpo_cli.config.algorithms import ALGORITHMS, reference_free
from dpo_cli.config.trl_fields import DPO_CONFIG_FIELDS
from dpo_cli.data.layouts import LAYOUT_NAMES, REPRESENTATIONS

DPO_LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)
LossType = Literal[DPO_LOSS_TYPES]  # type: ignore[valid-type]
Algorithm = Literal[tuple(ALGORITHMS)]  # type: ignore[valid-type]
# Algorithms whose loss has no reference model in it: they load none and train no faster with one.
REFERENCE_FREE = frozenset(reference_free())
Dtype = Literal["auto", "float32", "bfloat16", "float16"]


class Section(BaseModel):
    """Base for every section: unknown keys are errors, values are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(Section):
    """The policy model and its tokenizer."""

    name_or_path: str = Field(description="Policy model: a local directory or a Hub id, loaded with `from_pretrained`.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) of the model.")
    tokenizer_name_or_path: str | None = Field(
        None, description="Tokenizer to load instead of the model's own (same forms as `name_or_path`)."
    )
    dtype: Dtype = Field(
        "auto",
        description="Precision the weights are loaded in; `auto` keeps the checkpoint's own dtype.",
    )
    trust_remote_code: bool = Field(
        False, description="Run custom model code shipped with the checkpoint. Off unless you trust the source."
    )
    attn_implementation: str | None = Field(
        None, description="Attention kernel passed to `from_pretrained` (`eager`, `sdpa`, `flash_attention_2`)."
    )
    adapter: str | None = Field(
        None,
        description=(
            "Existing LoRA adapter (for example from an SFT run) to continue training from. "
            "It is loaded trainable on top of `name_or_path`; with `reference.kind: policy` "
            "the reference is a frozen copy of this adapter, not the bare base model."
        ),
    )
    chat_template: str | None = Field(
        None,
        description="Path to a Jinja chat template file that replaces the tokenizer's own.",
    )


class ReferenceSection(Section):
    """The frozen reference the policy is compared against (an explicit, visible choice)."""

    kind: Literal["policy", "model", "none"] = Field(
        "policy",
        description=(
            "`policy`: the starting policy, frozen (with LoRA: the adapters disabled, or a frozen "
            "copy of `model.adapter`; with full fine-tuning: a second copy of the model). "
            "`model`: a separate checkpoint at `name_or_path`. `none`: no reference model, for "
            "reference-free algorithms only."
        ),
    )
    name_or_path: str | None = Field(None, description="Reference checkpoint when `kind: model`.")
    revision: str | None = Field(None, description="Hub revision of the reference checkpoint.")

    @model_validator(mode="after")
    def _path_matches_kind(self) -> ReferenceSection:
        if self.kind == "model" and not self.name_or_path:
            raise ValueError("`reference.kind: model` needs `reference.name_or_path`")
        if self.kind != "model" and self.name_or_path:
            raise ValueError(f"`reference.name_or_path` is only used with `kind: model` (kind is `{self.kind}`)")
        return self


class QuantizationSection(Section):
    """4-bit loading for QLoRA, by `transformers.BitsAndBytesConfig` names."""

    load_in_4bit: Literal[True] = Field(
        True, description="Load the base weights in 4 bit (QLoRA). The only supported quantized mode."
    )
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type; NF4 is QLoRA's.")
    bnb_4bit_use_double_quant: bool = Field(True, description="Quantize the quantization constants too.")
    bnb_4bit_compute_dtype: Literal["bfloat16", "float16", "float32"] = Field(
        "bfloat16", description="Dtype the 4-bit weights are dequantized to for matmuls."
    )
    bnb_4bit_quant_storage: Literal["uint8", "bfloat16", "float16", "float32"] = Field(
        "uint8",
        description="Storage dtype of packed 4-bit weights; under ZeRO-3 it must equal the compute dtype.",
    )


class LoraSection(Section):
    """LoRA adapters, by `peft.LoraConfig` names."""

    r: int = Field(16, ge=1, le=1024, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = lora_alpha / r).")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear",
        description="Module names to adapt, or `all-linear` for every linear layer except the output head.",
    )
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases are trained.")
    modules_to_save: list[str] | None = Field(
        None, description="Extra modules trained fully and saved with the adapter."
    )
    use_rslora: bool = Field(False, description="Rank-stabilised scaling (lora_alpha / sqrt(r)).")
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA).")


class DataColumns(Section):
    """Which source columns hold the prompt, the responses and the rest of the conversation."""

    prompt: str | None = Field(
        "prompt",
        description=(
            "Column holding the prompt (a dotted path such as `input.messages` reads a nested field); `null` when "
            "chosen/rejected are whole dialogues sharing a prefix. Without a `prompt` column, `question` or "
            "`query` is used, else the prompt is implicit."
        ),
    )
    chosen: str = Field("chosen", description="Column holding the preferred response.")
    rejected: str = Field("rejected", description="Column holding the dispreferred response.")
    completion: str = Field("completion", description="Unpaired data (KTO): column holding the one response.")
    label: str = Field(
        "label",
        description=(
            "Unpaired data (KTO): boolean column, true when the response is desirable. For two responses with a "
            "label: the column naming the better one."
        ),
    )
    system: str | None = Field(
        "system",
        description=(
            "Column holding a system prompt, kept as the conversation's first turn (the rows become "
            "conversational); used when present, `null` to ignore it."
        ),
    )
    history: str | None = Field(
        "history",
        description=(
            "Column holding earlier turns before the prompt, as `[[user, assistant], ...]` (LLaMA-Factory) or "
            "messages; used when present, `null` to ignore it."
        ),
    )
    score: str | None = Field(
        None,
        description=(
            "Ranked data: the key (in each response entry) or list column holding the scores; by default "
            "`overall_score`, `score`, `rating`, `reward`, `rank` or `scores`, `ratings`, `ranks`."
        ),
    )


DataFormat = Literal[("auto", *REPRESENTATIONS, *LAYOUT_NAMES)]  # type: ignore[valid-type]


class DataSourceSection(Section):
    """One source of a mixture: an item of `data.train` or `data.eval`."""

    path: str = Field(
        description="File, folder, glob or Hub dataset id (files: JSONL/JSON/CSV/Parquet, plain or compressed)."
    )
    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Name in reports and per-source metrics (letters, digits, `_`, `.`, `-`); by default from the path.",
    )
    split: str | None = Field(
        None, description="Split to read (Hub datasets); by default `data.train_split` (`data.eval_split` in eval)."
    )
    subset: str | None = Field(None, description="Hub dataset configuration name; by default `data.subset`.")
    columns: DataColumns | None = Field(None, description="Column names of this source; by default `data.columns`.")
    format: DataFormat | None = Field(None, description="Layout of this source; by default `data.format`.")
    fraction: float | None = Field(
        None, gt=0.0, le=1.0, description="Take a seeded random share of this source's usable rows."
    )
    max_samples: int | None = Field(
        None, ge=1, description="Take at most this many of this source's usable rows (a seeded random choice)."
    )


DataSpec = str | list[str | DataSourceSection]


class DataSection(Section):
    """Where the preference pairs come from."""

    train: DataSpec = Field(
        description=(
            "Training data: a JSONL/JSON/CSV/Parquet file (plain or .gz/.bz2/.xz/.zst), a folder of them, a glob, a "
            "Hub dataset id, a list of files (one source), or a list of sources (`{path, split, subset, columns, "
            "format, fraction, max_samples}`: a mixture, combined and shuffled with `seed`)."
        )
    )
    eval: DataSpec | None = Field(
        None,
        description=(
            "Held-out data in the same forms; when absent, `eval_fraction` of train is held out. With several "
            "sources, held-out metrics are also reported per source."
        ),
    )
    subset: str | None = Field(None, description="Hub dataset configuration name.")
    train_split: str = Field("train", description="Split read from `train`.")
    eval_split: str | None = Field(None, description="Split read from `eval` (defaults to `train_split` for files).")
    eval_fraction: float | None = Field(
        0.1, gt=0.0, lt=1.0, description="Fraction of train held out for eval when `eval` is not given."
    )
    seed: int = Field(42, description="Seed of the held-out split, of mixtures and of `fraction`/`max_samples`.")
    columns: DataColumns = Field(default_factory=DataColumns, description="Source column names.")
    format: DataFormat = Field(
        "auto",
        description=(
            "`auto` detects each source's layout; `standard` (strings) or `conversational` (role/content messages) "
            "also fix the representation; or a layout name (see the formats table)."
        ),
    )
    min_score_gap: float = Field(
        0.0, ge=0.0, description="Ranked or scored data: drop rows whose best and worst scores differ by less."
    )
    max_drop_fraction: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description=(
            "`dpo train` drops rows that cannot train (listed in `data/rejects.jsonl` of the run) and stops when "
            "more than this share of a split would go: a share that large points to a mapping or `max_length` "
            "mistake. `--strict` stops on any."
        ),
    )
    max_row_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        description=(
            "Longest JSONL line (or row, in characters) read; a longer one is an error naming its line. It bounds "
            "what the data check holds at once (about 1 GB with a tokenizer at 4 MiB)."
        ),
    )
    max_train_samples: int | None = Field(None, ge=1, description="Use only the first N training rows.")
    max_eval_samples: int | None = Field(None, ge=1, description="Use only the first N eval rows.")
    unpair: bool = Field(
        False,
        description=(
            "`algorithm: kto` only: split each preference pair into two unpaired rows (prompt + chosen labelled "
            "desirable, prompt + rejected undesirable)."
        ),
    )


class DeepSpeedSection(Section):
    """DeepSpeed ZeRO settings, turned into a DeepSpeed JSON at launch."""

    zero_stage: Literal[2, 3] = Field(3, description="ZeRO stage.")
    offload_optimizer: Literal["none", "cpu"] = Field("none", description="Where optimizer states live.")
    offload_param: Literal["none", "cpu"] = Field("none", description="Where parameters live (ZeRO-3 only).")
    zero3_init: bool = Field(True, description="Build the model directly sharded (ZeRO-3 only).")
    zero3_save_16bit_model: bool = Field(
        True, description="Gather the 16-bit weights on save so the result loads in one process."
    )


class LaunchSection(Section):
    """How many processes and machines, and with which engine (DDP or DeepSpeed)."""

    num_processes: int = Field(1, ge=1, description="Processes in total over all machines (usually GPUs).")
    num_machines: int = Field(1, ge=1, description="Machines (nodes) taking part.")
    machine_rank: int = Field(0, ge=0, description="Rank of this machine, 0 on the main node.")
    main_process_ip: str | None = Field(None, description="Address of the main node (multi-node only).")
    main_process_port: int = Field(29500, ge=1, le=65535, description="Port of the main node.")
    deepspeed: DeepSpeedSection | None = Field(None, description="DeepSpeed ZeRO settings; `null` for DDP.")
    accelerate_config: str | None = Field(
        None, description="Your own accelerate config file, used as is instead of a generated one."
    )
    deepspeed_config: str | None = Field(
        None, description="Your own DeepSpeed JSON, used as is instead of one generated from `deepspeed:`."
    )

    @model_validator(mode="after")
    def _consistent(self) -> LaunchSection:
        if self.machine_rank >= self.num_machines:
            raise ValueError(f"machine_rank {self.machine_rank} must be below num_machines {self.num_machines}")
        if self.num_machines > 1 and not self.main_process_ip:
            raise ValueError("multi-node runs (num_machines > 1) need `main_process_ip`")
        if self.num_processes < self.num_machines:
            raise ValueError("num_processes counts all processes on all machines; it is below num_machines")
        if self.deepspeed is not None and self.deepspeed_config:
            raise ValueError("give either `deepspeed:` settings or `deepspeed_config:`, not both")
        return self


class JudgeSection(Section):
    """Who decides which of two responses is better, for the win rate of `dpo eval`."""

    kind: Literal["endpoint", "reward_model", "llm"] = Field(
        description=(
            "`endpoint`: any OpenAI-compatible chat endpoint (`base_url` + `model`); `reward_model`: a local "
            "`AutoModelForSequenceClassification` at `path` scoring each response; `llm`: a local causal LM at "
            "`path` answering a rubric prompt."
        )
    )
    base_url: str | None = Field(None, description="Endpoint root, e.g. `http://127.0.0.1:8000/v1` (`kind: endpoint`).")
    model: str | None = Field(None, description="Model name sent to the endpoint (`kind: endpoint`).")
    api_key_env: str | None = Field(
        None,
        description=(
            "Name of the environment variable holding the endpoint's API key (the key itself never goes in "
            "the config, on disk or in logs); unset for endpoints without authentication."
        ),
    )
    path: str | None = Field(None, description="Local judge model directory (`kind: reward_model` or `llm`).")
    max_retries: int = Field(
        5, ge=0, le=20, description="Retries, with exponential backoff, of an endpoint call on transient errors."
    )
    timeout: float = Field(60.0, gt=0.0, description="Seconds one endpoint call may take before it is retried.")
    max_new_tokens: int = Field(
        64, ge=1, description="Tokens the judge may write (`endpoint`, `llm`); the verdict is read from its reply."
    )

    @model_validator(mode="after")
    def _target_matches_kind(self) -> JudgeSection:
        if self.kind == "endpoint":
            missing = [name for name in ("base_url", "model") if not getattr(self, name)]
            if missing:
                raise ValueError(f"`judge.kind: endpoint` needs {' and '.join(f'`{m}`' for m in missing)}")
        elif not self.path:
            raise ValueError(f"`judge.kind: {self.kind}` needs `path` (a local model directory)")
        return self


class AlignmentTaxSection(Section):
    """Benchmarks run on the reference and the trained model by lm-evaluation-harness (`pip install lm_eval`)."""

    tasks: list[str] = Field(
        min_length=1,
        description=(
            "lm-evaluation-harness task names (`arc_easy`, `hellaswag`, ...) or paths to task YAML files, e.g. "
            "a task over a local data file."
        ),
    )
    limit: int | None = Field(None, ge=1, description="Examples per task; `null`: all of them.")
    num_fewshot: int | None = Field(None, ge=0, description="Few-shot examples; `null`: each task's default.")
    batch_size: int = Field(8, ge=1, description="Batch size of the harness's log-likelihood requests.")


class EvalSection(Section):
    """`dpo eval`: held-out preference metrics, generations, pathology checks and a judged win rate."""

    num_prompts: int = Field(64, ge=1, description="Held-out prompts to generate for (the first N of the eval split).")
    max_new_tokens: int = Field(128, ge=1, description="Tokens generated per response at most.")
    temperature: float = Field(0.7, ge=0.0, description="Sampling temperature of generations; 0 decodes greedily.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling threshold of generations.")
    seed: int = Field(0, description="Seed of generation sampling (fixed per batch, so reruns reproduce).")
    batch_size: int = Field(8, ge=1, description="Prompts generated together in one batch.")
    preference: bool = Field(True, description="Compute the held-out preference metrics (no generation needed).")
    generate: bool = Field(
        True, description="Generate from policy and reference for the pathology report and the win rate."
    )
    judge: JudgeSection | None = Field(None, description="Judge for the win rate; `null` skips the win rate.")
    alignment_tax: AlignmentTaxSection | None = Field(
        None, description="Benchmarks on the reference and the trained model, with the difference; `null` skips it."
    )


class EndpointSection(Section):
    """An OpenAI-compatible chat endpoint to sample responses from (vLLM, TGI, `transformers serve`, ...)."""

    base_url: str = Field(description="Endpoint root, e.g. `http://127.0.0.1:8000/v1`.")
    model: str = Field(description="Model name sent to the endpoint.")
    api_key_env: str | None = Field(
        None, description="Name of the environment variable holding the API key; unset for servers without one."
    )
    max_retries: int = Field(5, ge=0, le=20, description="Retries, with exponential backoff, on transient errors.")
    timeout: float = Field(120.0, gt=0.0, description="Seconds one request may take before it is retried.")


class GenerateSection(Section):
    """`dpo generate-pairs` and `dpo iterate`: sample responses per prompt, score them, pair winners with losers."""

    prompts: str | list[str] | None = Field(
        None, description="Prompt file(s) or folder (JSONL, JSON, CSV, Parquet) or Hub id; `--prompts` overrides."
    )
    prompt_column: str = Field(
        "prompt", description="Column holding each prompt: a string, or a list of role/content messages."
    )
    max_prompts: int | None = Field(None, ge=1, description="Use only the first N prompts.")
    num_samples: int = Field(4, ge=2, description="Responses sampled per prompt.")
    max_new_tokens: int = Field(128, ge=1, description="Tokens generated per response at most.")
    temperature: float = Field(0.8, gt=0.0, description="Sampling temperature (> 0: the samples must differ).")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus sampling threshold.")
    seed: int = Field(0, description="Sampling seed (fixed per batch of prompts, so reruns reproduce).")
    batch_size: int = Field(
        8, ge=1, description="Prompts sampled together (local model), or requests in flight (endpoint)."
    )
    endpoint: EndpointSection | None = Field(
        None, description="Sample from this endpoint instead of the local model (`dpo iterate` always uses the policy)."
    )
    scorer: str | None = Field(
        None,
        description=(
            "Scoring function `module:function` or `path/to/file.py:function`, called as `f(prompt, response) -> "
            "float` (higher is better); `null` uses the judge in `eval.judge`."
        ),
    )
    pairing: Literal["best_vs_worst", "all"] = Field(
        "best_vs_worst",
        description="`best_vs_worst`: one pair per prompt; `all`: every ranked pair whose gap passes `min_score_gap`.",
    )
    min_score_gap: float = Field(
        0.0, ge=0.0, description="A pair is kept only when chosen outscores rejected by more than this."
    )
    max_similarity: float = Field(
        0.9,
        gt=0.0,
        le=1.0,
        description="Responses at least this similar (normalised Indel similarity) count as one; the rest are paired.",
    )

    @field_validator("scorer")
    @classmethod
    def _function_reference(cls, value: str | None) -> str | None:
        if value is not None:
            module, sep, function = value.rpartition(":")
            if not sep or not module or not function.isidentifier():
                raise ValueError(f"`{value}` is not `module:function` or `path/to/file.py:function`")
        return value


class IterateSection(Section):
    """`dpo iterate`: rounds of generate pairs -> validate -> train -> evaluate, each from the last."""

    rounds: int = Field(2, ge=1, description="Rounds to run; `--rounds` overrides.")
    reference: Literal["original", "previous"] = Field(
        "original",
        description="Reference of each round: the original model, or the previous round's policy (online-style DPO).",
    )
    prompts_per_round: int | None = Field(
        None, ge=1, description="Prompts per round, taken in turn from `generate.prompts`; `null`: all, every round."
    )
    eval_prompts: str | list[str] | None = Field(
        None,
        description=(
            "Fixed held-out prompts scored after every round (generated with the `eval:` settings); `null`: the "
            "prompts of the `data:` eval split."
        ),
    )
    min_pairs: int = Field(4, ge=1, description="A round that yields fewer pairs than this stops the loop.")


# DPOConfig fields that another section owns: one name per setting.
RESERVED_TRAINING_FIELDS = {
    "output_dir": "set the top-level `output_dir`",
    "trust_remote_code": "set `model.trust_remote_code`",
    "model_init_kwargs": "set `model.dtype`, `model.revision`, `model.attn_implementation`",
    "deepspeed": "set `launch.deepspeed` or `launch.deepspeed_config`",
    "resume_from_checkpoint": "pass `--resume` to `dpo train`",
    "local_rank": "set by the launcher",
    "pad_token": "deprecated in TRL; the tokenizer's pad token is used",
}


def _dpo(name: str) -> Any:
    # TRL's declared default (frozen in trl_fields.py), or dpo's deliberate one: never retyped here.
    return ALGORITHMS["dpo"].default(name)


class TrainerArgs(Section):
    """Fields every algorithm's TRL config shares (`DPOConfig`, `KTOConfig`, `ORPOConfig`, `CPOConfig`)."""

    beta: float = Field(
        _dpo("beta"), gt=0.0, description="Strength of the KL penalty towards the reference (DPO's beta)."
    )
    learning_rate: float = Field(_dpo("learning_rate"), gt=0.0, lt=1.0, description="Peak learning rate.")
    num_train_epochs: float = Field(_dpo("num_train_epochs"), gt=0.0, description="Passes over the training data.")
    max_steps: int = Field(
        _dpo("max_steps"), ge=-1, description="Optimizer steps; overrides `num_train_epochs` when > 0."
    )
    per_device_train_batch_size: int = Field(
        _dpo("per_device_train_batch_size"), ge=1, description="Pairs per device per micro-batch."
    )
    per_device_eval_batch_size: int = Field(
        _dpo("per_device_eval_batch_size"), ge=1, description="Pairs per device per eval batch."
    )
    gradient_accumulation_steps: int = Field(
        _dpo("gradient_accumulation_steps"), ge=1, description="Micro-batches per optimizer step."
    )
    max_length: int | None = Field(
        _dpo("max_length"),
        ge=8,
        description="Tokens of prompt + response kept per sequence; longer ones are truncated.",
    )
    warmup_steps: float = Field(
        _dpo("warmup_steps"), ge=0, description="Warm-up steps, or a fraction of all steps when below 1."
    )
    lr_scheduler_type: str = Field(
        _dpo("lr_scheduler_type"), description="Learning-rate schedule (`linear`, `cosine`, ...)."
    )
    weight_decay: float = Field(_dpo("weight_decay"), ge=0.0, description="Decoupled weight decay.")
    max_grad_norm: float = Field(_dpo("max_grad_norm"), ge=0.0, description="Gradient clipping norm (0 disables).")
    seed: int = Field(_dpo("seed"), description="Seed for initialisation and data order.")
    logging_steps: float = Field(_dpo("logging_steps"), gt=0, description="Steps between logged metrics.")
    eval_strategy: Literal["no", "steps", "epoch"] = Field(
        _dpo("eval_strategy"), description="When to evaluate during training."
    )
    eval_steps: float | None = Field(
        _dpo("eval_steps"), gt=0, description="Steps between evaluations with `eval_strategy: steps`."
    )
    save_strategy: Literal["no", "steps", "epoch", "best"] = Field(
        _dpo("save_strategy"), description="When to checkpoint."
    )
    save_steps: float = Field(_dpo("save_steps"), gt=0, description="Steps between checkpoints.")
    save_total_limit: int | None = Field(
        _dpo("save_total_limit"), ge=1, description="Checkpoints kept on disk; older ones are deleted."
    )
    bf16: bool | None = Field(
        _dpo("bf16"), description="bfloat16 mixed precision; TRL turns it on unless `fp16` is set."
    )
    fp16: bool = Field(_dpo("fp16"), description="float16 mixed precision.")
    gradient_checkpointing: bool = Field(
        _dpo("gradient_checkpointing"), description="Recompute activations to save memory."
    )
    precompute_ref_log_probs: bool | None = Field(
        None,
        description=(
            "Compute reference log-probs once before training (sorted by length, cached in the run directory for "
            "`--resume`), so no reference model stays loaded. Unset: DPO precomputes with full fine-tuning (no "
            "second copy of the model) and for more than two epochs, where it was measured to win; otherwise online."
        ),
    )
    train_sampling_strategy: Literal["group_by_length", "random", "sequential", "batch_rebalance"] = Field(
        _dpo("train_sampling_strategy"),
        description=(
            "Batch order. `group_by_length` (dpo's default; TRL's is `random`): shuffled mega-batches of 50 batches, "
            "each sorted by length, so pairs of similar length share a batch and far less of it is padding; "
            "reproducible for `seed`, and a resumed run sees the same batches. Evaluation and the reference "
            "precompute then run sorted by length. `random`: TRL's random batches. `sequential`, `batch_rebalance`: "
            "transformers' own."
        ),
    )
    use_cpu: bool = Field(_dpo("use_cpu"), description="Train on the CPU even when a GPU is present.")
    report_to: str | list[str] = Field(
        _dpo("report_to"), description="Experiment trackers (`wandb`, `tensorboard`, ...)."
    )
    optim: str = Field(
        _dpo("optim"), description="Optimizer name as transformers spells it (its default follows the torch version)."
    )

    @field_validator("eval_strategy", "save_strategy", mode="before")
    @classmethod
    def _yaml_no(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `no` as false; `save_strategy: no` means the string "no".
        return "no" if value is False else value


class DPOTrainingArgs(TrainerArgs):
    """The `DPOConfig` fields most runs set, typed with ranges. Others are accepted by name."""

    loss_type: LossType | list[LossType] = Field(
        _dpo("loss_type"), description="DPO loss, or several combined with `loss_weights`."
    )
    loss_weights: list[float] | None = Field(_dpo("loss_weights"), description="Weights of the losses in `loss_type`.")
    label_smoothing: float = Field(
        _dpo("label_smoothing"),
        ge=0.0,
        lt=0.5,
        description="Probability a label is flipped (robust DPO) or EXO's epsilon.",
    )
    padding_free: bool | None = Field(
        None,
        description=(
            "Run each batch's chosen and rejected sequences packed, without padding: position ids restart per "
            "sequence, so SDPA, eager and flex attention (rows as wide as the longest sequence) and FlashAttention "
            "(one row, variable-length kernels) keep them apart. Per-pair log-probs equal the padded computation. "
            "Unset: on where the model supports it, with FlashAttention always and with SDPA, eager and flex on "
            "length-grouped batches (where it was measured to pay, docs/speed.md); `false`: TRL's padded "
            "batches. TRL 1.16's own `padding_free` only warns and pads; dpo implements it for `algorithm: dpo`."
        ),
    )


def passthrough_fields(
    fields: dict[str, str] = DPO_CONFIG_FIELDS, typed: type[Section] = DPOTrainingArgs, config: str = "DPOConfig"
) -> dict[str, Any]:
    common = set(typed.model_fields)
    return {
        name: (Any, Field(None, description=f"`{config}.{name}`: {help_text}"))
        for name, help_text in sorted(fields.items())
        if name not in common and name not in RESERVED_TRAINING_FIELDS
    }


# Every other DPOConfig name is accepted unchanged; TRL checks its value when the run is built.
TrainingSection = create_model(
    "TrainingSection",
    __base__=DPOTrainingArgs,
    __doc__="`trl.DPOConfig` fields, by their TRL names. Only the keys you set are passed on.",
    **passthrough_fields(),
)


class SweepSection(Section):
    """Settings of `dpo sweep-beta`: the grid, where it goes, and how the winner is chosen."""

    betas: list[float] = Field(
        [0.01, 0.05, 0.1, 0.2, 0.5], min_length=1, description="Values of `training.beta` to train (each > 0)."
    )
    learning_rates: list[float] | None = Field(
        None, description="Optional `training.learning_rate` grid; every beta is trained with every rate."
    )
    output_dir: str | None = Field(None, description="Sweep directory; defaults to `<output_dir>-sweep`.")
    select_by: Literal["reward_accuracy", "logp_margin", "win_rate"] = Field(
        "reward_accuracy",
        description=(
            "Held-out metric the winner maximises: implicit-reward accuracy; the policy's log-prob margin "
            "(chosen minus rejected), which unlike the reward margin does not scale with beta; or the judged "
            "win rate against the reference (needs `eval.judge`)."
        ),
    )
    max_chosen_logp_drop: float | None = Field(
        5.0,
        ge=0.0,
        description=(
            "Guard: a point whose mean held-out chosen log-prob fell more than this many nats below the "
            "reference (likelihood displacement, drifting far from the reference) cannot win; `null` disables it."
        ),
    )

    @model_validator(mode="after")
    def _positive(self) -> SweepSection:
        bad = [b for b in self.betas if b <= 0] + [lr for lr in self.learning_rates or [] if lr <= 0]
        if bad:
            raise ValueError(f"sweep values must be > 0, found {bad}")
        return self


class RunConfig(Section):
    """A whole `dpo` run."""

    output_dir: str = Field(description="Run directory: resolved config, metrics, plots, checkpoints, final weights.")
    algorithm: Algorithm = Field(
        "dpo",
        description=(
            "Preference-optimization trainer: `dpo` (TRL's DPOTrainer, every `loss_type`), `kto` (unpaired "
            "thumbs-up/down data), `orpo`, `simpo` and `cpo` (reference-free). `training:` takes that trainer's "
            "own config names; see the variants page (`docs/variants.md`)."
        ),
    )
    model: ModelSection
    reference: ReferenceSection = Field(default_factory=ReferenceSection)
    quantization: QuantizationSection | None = Field(None, description="4-bit loading (QLoRA); needs `lora`.")
    lora: LoraSection | None = Field(None, description="LoRA adapters; `null` means full fine-tuning.")
    data: DataSection
    training: TrainingSection = Field(default_factory=TrainingSection)  # type: ignore[valid-type]
    launch: LaunchSection = Field(default_factory=LaunchSection)
    eval: EvalSection = Field(default_factory=EvalSection, description="Read by `dpo eval` only; training ignores it.")
    sweep: SweepSection = Field(default_factory=SweepSection, description="Read by `dpo sweep-beta` only.")
    generate: GenerateSection = Field(
        default_factory=GenerateSection, description="Read by `dpo generate-pairs` and `dpo iterate` only."
    )
    iterate: IterateSection = Field(default_factory=IterateSection, description="Read by `dpo iterate` only.")

    @model_validator(mode="before")
    @classmethod
    def _reference_free_default(cls, data: Any) -> Any:
        # A reference-free algorithm has no reference to choose: unset means none, not the policy.
        if isinstance(data, dict) and data.get("algorithm") in REFERENCE_FREE and "reference" not in data:
            return {**data, "reference": {"kind": "none"}}
        return data

    @property
    def mode(self) -> Literal["full", "lora", "qlora"]:
        if self.lora is None and not self.model.adapter:
            return "full"
        return "qlora" if self.quantization is not None else "lora"

    def training_overrides(self) -> dict[str, Any]:
        """The `training:` keys the user set, as DPOConfig keyword arguments."""
        return {name: getattr(self.training, name) for name in sorted(self.training.model_fields_set)}

    def loss_types(self) -> list[str]:
        """The configured loss names (ORPO has no `loss_type`: `["orpo"]`)."""
        loss = getattr(self.training, "loss_type", None) or self.algorithm
        return [loss] if isinstance(loss, str) else list(loss)
