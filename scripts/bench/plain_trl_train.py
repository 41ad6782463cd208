"""The baseline of bench_train_speed.py and gpu_bench.sh: one epoch written as a plain TRL script.

This is what a user writes with TRL alone, on TRL's defaults (random batches, padded): load the
model and the JSONL pairs, train one epoch with LoRA (optionally QLoRA), evaluate the held-out
pairs once, save the adapter. It writes its step times, train runtime and, on a GPU, the peak
GPU memory to a JSON file so that both sides are measured the same way.

    python scripts/bench/plain_trl_train.py --model DIR --train F.jsonl [--eval F.jsonl] --out R.json
        [--batch-size 8] [--max-length 1024] [--lora-r 16] [--qlora] [--bf16] [--attn sdpa]
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--train", required=True)
    parser.add_argument("--eval")
    parser.add_argument("--out", required=True)
    parser.add_argument("--output-dir", default="/tmp/plain-trl-run")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval-batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-alpha", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--gradient-checkpointing", choices=("on", "off"), help="default: TRL's (on)")
    parser.add_argument("--qlora", action="store_true")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--attn", default=None)
    args = parser.parse_args()
    started = time.time()

    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    class StepTimes(TrainerCallback):
        def __init__(self) -> None:
            self.records: list[dict] = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.records.append({"step": state.global_step, "time": time.time(), **(logs or {})})

    load_kwargs: dict = {"dtype": torch.bfloat16 if args.bf16 else torch.float32}
    if args.attn:
        load_kwargs["attn_implementation"] = args.attn
    if args.qlora:
        from transformers import BitsAndBytesConfig

        load_kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, **load_kwargs)
    train = load_dataset("json", data_files=args.train, split="train")
    held_out = load_dataset("json", data_files=args.eval, split="train") if args.eval else None
    config = DPOConfig(
        output_dir=args.output_dir,
        num_train_epochs=1,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch_size,
        max_length=args.max_length,
        learning_rate=args.learning_rate,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=args.bf16,
        seed=args.seed,
        **({"gradient_checkpointing": args.gradient_checkpointing == "on"} if args.gradient_checkpointing else {}),
    )
    peft_config = LoraConfig(
        task_type="CAUSAL_LM", r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.0, target_modules="all-linear"
    )
    timer = StepTimes()
    trainer = DPOTrainer(
        model=model,
        args=config,
        train_dataset=train,
        eval_dataset=held_out,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[timer],
    )
    output = trainer.train()
    metrics = trainer.evaluate() if held_out is not None else {}
    trainer.save_model(args.output_dir + "/final")
    result = {
        "records": timer.records,
        "train_runtime": output.metrics.get("train_runtime"),
        "steps": trainer.state.global_step,
        "eval": metrics,
        # Whole process, as for `dpo train` (scripts/bench/dpo_train_measured.py).
        "peak_gpu_bytes": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None,
        "wall_in_process": time.time() - started,
    }
    with open(args.out, "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main()
