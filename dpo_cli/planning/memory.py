"""Per-device memory of a DPO run, by arithmetic on the model's shape and the run config.

No weights are loaded and nothing is measured: every figure is a formula over `ModelShape`
and `RunConfig`, so that `dpo plan` runs on a laptop. The formulas follow what the stack
actually allocates (TRL 1.16, peft 0.21, bitsandbytes, DeepSpeed ZeRO); each row's note says
which rule applies. `scripts/calibrate_plan.py` compares them with measured peaks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dpo_cli.config.schema import RunConfig
from dpo_cli.planning.arch import ModelShape
from dpo_cli.train.speed import precompute_choice

GIB = 1024**3
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

# bitsandbytes 4-bit: two weights per byte, plus one absmax constant per block of 64 weights:
# fp32 (32 bits / 64 weights) or, with double quantization, 8 bits / 64 weights plus one fp32
# second-level constant per 256 blocks (the QLoRA paper's 0.127 bits per parameter).
NF4_BITS = 4 + 32 / 64
NF4_DOUBLE_QUANT_BITS = 4 + 8 / 64 + 32 / (64 * 256)

# TRL's fused LM head scores at most this many tokens x vocabulary columns per tile
# (trl.kernels.chunked_logprob.TOKEN_CHUNK_SIZE and trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE).
LOGPROB_TOKEN_TILE = 4096
LOGPROB_VOCAB_TILE = 32768
# Off CUDA, the tile is folded with plain torch ops that hold about this many fp32 copies of it.
CPU_TILE_COPIES = 5

# CUDA context, cuBLAS workspaces and NCCL buffers: present on every GPU before any tensor.
CUDA_RUNTIME_BYTES = 1 * GIB


@dataclass(frozen=True)
class Row:
    """One line of the memory table."""

    label: str
    gpu_bytes: float
    note: str = ""
    cpu_bytes: float = 0.0


@dataclass
class MemoryPlan:
    """The estimate for one device (one process) of the run."""

    rows: list[Row]
    gpus: int
    assumptions: list[str] = field(default_factory=list)
    trainable_params: int = 0
    total_params: int = 0
    tokens_per_micro_batch: int = 0
    checkpointing: bool = True
    activations_without_checkpointing: float = 0.0
    activations_with_checkpointing: float = 0.0
    full_logits_bytes: float = 0.0

    @property
    def gpu_total(self) -> float:
        return sum(r.gpu_bytes for r in self.rows)

    @property
    def cpu_total(self) -> float:
        return sum(r.cpu_bytes for r in self.rows)

    def row(self, label: str) -> Row:
        return next(r for r in self.rows if r.label == label)


@dataclass(frozen=True)
class RunShape:
    """The settings of a run that memory depends on, read once from the config."""

    mode: str  # full | lora | qlora
    weight_bytes: int
    act_bytes: int
    mixed_precision: bool
    zero_stage: int  # 0 (DDP), 2 or 3
    offload_optimizer: bool
    offload_param: bool
    micro_batch: int
    max_length: int
    checkpointing: bool
    reference: str  # none | adapter | model
    eager_attention: bool
    optimizer_state_bytes: float  # per trainable parameter
    lora_dropout: bool


def run_shape(cfg: RunConfig, shape: ModelShape, deepspeed_json: dict | None = None) -> RunShape:
    """Read the memory-relevant settings out of the validated config."""
    t = cfg.training
    dtype = cfg.model.dtype
    if dtype == "auto":
        dtype = shape.checkpoint_dtype if shape.checkpoint_dtype in DTYPE_BYTES else "float32"
    bf16 = t.bf16 if t.bf16 is not None else not t.fp16  # TRL turns bf16 on unless fp16 is set
    mixed = bool(bf16 or t.fp16)
    weight_bytes = DTYPE_BYTES[dtype]
    zero, off_opt, off_param = 0, False, False
    if cfg.launch.deepspeed is not None:
        ds = cfg.launch.deepspeed
        zero, off_opt, off_param = ds.zero_stage, ds.offload_optimizer == "cpu", ds.offload_param == "cpu"
    elif deepspeed_json is not None:
        zo = deepspeed_json.get("zero_optimization", {})
        zero = int(zo.get("stage", 0) or 0)
        off_opt = (zo.get("offload_optimizer") or {}).get("device") == "cpu"
        off_param = (zo.get("offload_param") or {}).get("device") == "cpu"
    if cfg.reference.kind == "none" or precompute_choice(cfg)[0]:
        reference = "none"
    elif cfg.reference.kind == "model":
        reference = "model"
    elif cfg.model.adapter:
        reference = "adapter"  # TRL keeps a frozen copy of the adapter beside the trainable one
    elif cfg.lora is not None:
        reference = "none"  # the reference is the policy with its adapters disabled
    else:
        reference = "model"  # full fine-tuning: a second, frozen copy of the model
    optim = (t.optim or "").lower()
    if "8bit" in optim:
        state = 2.0
    elif "sgd" in optim:
        state = 0.0
    else:
        state = 8.0  # AdamW: m and v, fp32 (DeepSpeed and fp32 params) or the params' 16-bit dtype
    return RunShape(
        mode=cfg.mode,
        weight_bytes=weight_bytes,
        act_bytes=2 if (mixed or weight_bytes == 2) else 4,
        mixed_precision=mixed,
        zero_stage=zero,
        offload_optimizer=off_opt,
        offload_param=off_param and zero == 3,
        micro_batch=t.per_device_train_batch_size,
        max_length=t.max_length or 1024,
        checkpointing=bool(t.gradient_checkpointing),
        reference=reference,
        eager_attention=cfg.model.attn_implementation == "eager",
        optimizer_state_bytes=state,
        lora_dropout=cfg.lora is not None and cfg.lora.lora_dropout > 0,
    )


def weight_bytes(shape: ModelShape, run: RunShape, quant: object | None = None) -> float:
    """Bytes of one copy of the base model's weights as loaded (before any ZeRO partitioning).

    4-bit: the blocks' linear layers are packed; embeddings, the output head and norms stay
    unquantized and `peft.prepare_model_for_kbit_training` casts them to fp32.
    """
    if quant is None:
        return shape.params * run.weight_bytes
    bits = NF4_DOUBLE_QUANT_BITS if getattr(quant, "bnb_4bit_use_double_quant", True) else NF4_BITS
    return shape.linear_params * bits / 8 + (shape.embedding_params + shape.norm_params) * 4


def lora_params(shape: ModelShape, cfg: RunConfig) -> int:
    """Trainable adapter parameters: r x (fan_in + fan_out) per targeted linear, per block.

    `all-linear` targets every linear layer in the blocks (peft leaves the output head out).
    DoRA adds one magnitude per output feature; `modules_to_save` trains a full copy.
    """
    lora = cfg.lora
    if lora is None:
        return 0
    targets = lora.target_modules
    linears = [layer for layer in shape.block_linears() if targets == "all-linear" or layer.name in targets]
    per_block = sum(lora.r * (layer.fan_in + layer.fan_out) for layer in linears)
    if lora.use_dora:
        per_block += sum(layer.fan_out for layer in linears)
    saved = 0
    for name in lora.modules_to_save or []:
        if name in ("lm_head", "embed_tokens", "wte"):
            saved += shape.vocab * shape.hidden
    return shape.layers * per_block + saved


def block_activation_bytes(shape: ModelShape, run: RunShape) -> float:
    """Bytes autograd keeps per token for one decoder block's backward.

    Counted from what each op saves: norm inputs (RMSNorm upcasts to fp32 first), the
    attention inputs and output (keys and values repeated to every query head, as transformers
    does when a padding mask is present) and the copy the output projection reads, and the
    MLP intermediates (SwiGLU: gate, up, activation, product; GPT-2's tanh-GELU: five).
    """
    a, h, i = run.act_bytes, shape.hidden, shape.intermediate
    q = shape.heads * shape.head_dim
    if shape.model_type == "gpt2":
        norms = 2 * (a * h + a * h)  # each LayerNorm's input and its output (the next layer's input)
        attention = a * (3 * h + h + h)  # q, k, v (views of one tensor), output, output copy
        mlp = a * 5 * i
        total = norms + attention + mlp
    else:
        trainable_norm = run.mode == "full"
        norm = 4 * h + (a * h if trainable_norm else 0) + a * h
        attention = a * (q + 2 * q + q + q)  # q, repeated k and v, output, output copy
        mlp = a * 4 * i
        total = 2 * norm + attention + mlp
    if run.mode != "full" and run.lora_dropout:
        # Each adapter's dropout makes its own copy of its input, plus a one-byte mask.
        inputs = sum(layer.fan_in for layer in shape.block_linears())
        total += (a + 1) * inputs
    if run.eager_attention:
        total += a * shape.heads * run.max_length * 2  # softmax output and its masked copy, per query
    else:
        # sdpa turns the boolean padding mask into an additive one in the activation dtype on every
        # call, and the kernel keeps it for backward: one [length x length] mask per sequence per block.
        total += a * run.max_length
    return total


def activation_bytes(shape: ModelShape, run: RunShape, checkpointing: bool) -> float:
    """Activations of one micro-batch: `micro_batch` pairs x 2 (chosen, rejected) x max_length.

    Without checkpointing every block keeps everything; with it, each block keeps only its
    input and one block at a time is recomputed in full during backward. Both add the
    embedding output, the final norm, the hidden states the fused head saves and its fp32
    input gradient, the 4-D attention mask, and a no-grad reference forward's largest
    transient (when the reference runs on the same device during the step).
    """
    tokens = run.micro_batch * 2 * run.max_length
    a, h = run.act_bytes, shape.hidden
    block = block_activation_bytes(shape, run)
    # With checkpointing: each block's input, plus one block recomputed in full during backward.
    kept = shape.layers * a * h + block if checkpointing else shape.layers * block
    head = a * h * 3 + 4 * h  # embeddings out, final norm in/out, fused head's fp32 grad of its input
    # Backward of one block holds the gradients of its widest intermediates at once.
    backward = a * 4 * shape.intermediate
    per_token = kept + head + backward
    mask = tokens * run.max_length  # the boolean [B, 1, L, L] padding mask, built once per forward
    reference_transient = a * (h + 2 * shape.intermediate) * tokens
    return per_token * tokens + mask + reference_transient


def logits_bytes(shape: ModelShape, run: RunShape, cpu_kernels: bool = False) -> float:
    """Working set of TRL's fused LM head: one token x vocabulary tile, never the full logits."""
    tokens = run.micro_batch * 2 * run.max_length
    tile = min(tokens, LOGPROB_TOKEN_TILE) * min(shape.vocab, LOGPROB_VOCAB_TILE)
    if cpu_kernels:
        return tile * (run.act_bytes + 4 * CPU_TILE_COPIES)
    return tile * run.act_bytes


def estimate_memory(
    cfg: RunConfig,
    shape: ModelShape,
    gpus: int,
    *,
    deepspeed_json: dict | None = None,
    cpu_kernels: bool = False,
) -> MemoryPlan:
    """Estimate the peak memory of one training process.

    Args:
        cfg: The validated run config.
        shape: The model's shape (`load_model_shape`).
        gpus: Processes the run is spread over (ZeRO partitions across them).
        deepspeed_json: The user's own DeepSpeed JSON, when `launch.deepspeed_config` is set.
        cpu_kernels: Model the CPU code paths (no CUDA context, TRL's torch fallback for the
            fused head); used by the calibration against CPU runs.

    Returns:
        The table rows (bytes per device) and the assumptions behind them.
    """
    run = run_shape(cfg, shape, deepspeed_json)
    n = max(gpus, 1)
    zero3 = run.zero_stage == 3
    shard = n if zero3 else 1
    base = weight_bytes(shape, run, cfg.quantization)
    rows: list[Row] = []
    notes: list[str] = []

    # Weights.
    label = {"full": "weights", "lora": "base weights (frozen)", "qlora": "base weights, 4-bit (frozen)"}[run.mode]
    dtype_note = (
        "4-bit NF4 packed linears, fp32 embeddings/norms" if run.mode == "qlora" else f"{run.weight_bytes} B/param"
    )
    note = f"{shape.params / 1e9:.2f}B params, {dtype_note}" + (f", ZeRO-3 / {n}" if zero3 else "")
    if run.offload_param:
        rows.append(Row(label, 0.0, note + ", offloaded to CPU", cpu_bytes=base / shard))
    else:
        rows.append(Row(label, base / shard, note))
    if zero3:
        block_params = sum(layer.params for layer in shape.block_linears())
        per_param = NF4_DOUBLE_QUANT_BITS / 8 if run.mode == "qlora" else run.weight_bytes
        head_bytes = 4 if run.mode == "qlora" else run.weight_bytes
        gathered = max(2 * block_params * per_param, shape.vocab * shape.hidden * head_bytes)
        rows.append(Row("ZeRO-3 gathered params", gathered, "two blocks in flight, or the gathered output head"))

    # Trainable parameters, their gradients and optimizer states.
    if run.mode == "full":
        trainable, param_bytes = shape.params, run.weight_bytes
    else:
        trainable, param_bytes = lora_params(shape, cfg), 4  # peft keeps adapters in fp32
        rows.append(Row("LoRA adapters", trainable * param_bytes / shard, f"{trainable / 1e6:.1f}M params, fp32"))
    deepspeed = run.zero_stage > 0
    grad_shard = n if run.zero_stage >= 2 else 1
    grad_bytes = param_bytes + (4 if deepspeed and param_bytes == 2 else 0)  # DS adds an fp32 partition
    rows.append(
        Row(
            "gradients",
            trainable * grad_bytes / grad_shard,
            f"{grad_bytes} B/param" + (f", ZeRO / {n}" if grad_shard > 1 else ""),
        )
    )
    state = run.optimizer_state_bytes
    if state == 8.0 and param_bytes == 2 and not deepspeed:
        state = 4.0  # torch's AdamW keeps m and v in the parameters' own 16-bit dtype
    master = 4 if deepspeed and param_bytes == 2 else 0  # DeepSpeed's fp32 master copy of 16-bit params
    optim_bytes = trainable * (state + master) / (n if deepspeed else 1)
    optim_note = (
        f"{state:g} B/param states" + (" + 4 B fp32 master" if master else "") + (f", ZeRO / {n}" if deepspeed else "")
    )
    if run.offload_optimizer:
        rows.append(Row("optimizer states", 0.0, optim_note + ", offloaded to CPU", cpu_bytes=optim_bytes))
    else:
        rows.append(Row("optimizer states", optim_bytes, optim_note))

    # Reference model.
    if run.reference == "model":
        ref_shard = n if zero3 else 1  # TRL shards the reference only under ZeRO-3
        rows.append(Row("reference model", base / ref_shard, "frozen copy" + (f", ZeRO-3 / {n}" if zero3 else "")))
    elif run.reference == "adapter":
        rows.append(Row("reference model", lora_params(shape, cfg) * 4, "frozen copy of model.adapter"))
    else:
        why = (
            "precomputed log-probs"
            if precompute_choice(cfg)[0]
            else "reference-free"
            if cfg.reference.kind == "none"
            else "LoRA: policy with adapters disabled"
        )
        rows.append(Row("reference model", 0.0, f"none ({why})"))

    # Activations and the LM head.
    with_ckpt = activation_bytes(shape, run, checkpointing=True)
    without = activation_bytes(shape, run, checkpointing=False)
    tokens = run.micro_batch * 2 * run.max_length
    act_note = (
        f"{run.micro_batch} pairs x 2 x {run.max_length} tokens, "
        + ("with" if run.checkpointing else "without")
        + " gradient checkpointing"
    )
    rows.append(Row("activations", with_ckpt if run.checkpointing else without, act_note))
    full_logits = tokens * shape.vocab * 4
    rows.append(
        Row(
            "logits (fused LM head)",
            logits_bytes(shape, run, cpu_kernels),
            f"tiles of {min(tokens, LOGPROB_TOKEN_TILE)} x {min(shape.vocab, LOGPROB_VOCAB_TILE)}; "
            f"full fp32 logits would be {full_logits / GIB:.1f} GiB",
        )
    )
    if not cpu_kernels:
        rows.append(Row("CUDA context + workspaces", CUDA_RUNTIME_BYTES, "fixed allowance"))

    notes.append(f"sequences padded to max_length {run.max_length} (worst case; real batches pad to the longest pair)")
    if run.mode == "full" and not deepspeed and run.weight_bytes == 2:
        notes.append("16-bit weights without DeepSpeed: no fp32 master copy, AdamW states in 16 bit")
    return MemoryPlan(
        rows=rows,
        gpus=n,
        assumptions=notes,
        trainable_params=trainable,
        total_params=shape.params,
        tokens_per_micro_batch=tokens,
        checkpointing=run.checkpointing,
        activations_without_checkpointing=without,
        activations_with_checkpointing=with_ckpt,
        full_logits_bytes=full_logits,
    )
