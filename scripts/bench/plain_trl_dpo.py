"""The baseline for bench_train_overhead.py: the same run written as a plain TRL script.

This is what a user writes by hand with TRL alone; it records a timestamp per logged step so
that both sides are measured the same way.
"""

from __future__ import annotations

import json
import sys
import time

from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import DPOConfig, DPOTrainer


class StepTimes(TrainerCallback):
    def __init__(self) -> None:
        self.records: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.records.append({"step": state.global_step, "time": time.time(), **(logs or {})})


def main(model_dir: str, train_file: str, out_file: str, max_steps: int, output_dir: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32")
    dataset = load_dataset("json", data_files=train_file, split="train")
    args = DPOConfig(
        output_dir=output_dir,
        beta=0.1,
        learning_rate=2e-3,
        max_steps=max_steps,
        per_device_train_batch_size=8,
        max_length=128,
        logging_steps=1,
        save_strategy="no",
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        seed=42,
    )
    peft_config = LoraConfig(
        task_type="CAUSAL_LM", r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["c_attn", "c_proj"]
    )
    timer = StepTimes()
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[timer],
    )
    trainer.train()
    with open(out_file, "w") as handle:
        json.dump(timer.records, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
