"""`dpo train`: from a validated config to a finished (or resumable) run directory.

- `run`: the run itself (scope, lock, records, resume, finish); `trl_args`: the config's
  `training:` as the algorithm's TRL config; `callbacks`, `ref_cache`, `diagnose`, `plots`,
  `summary`: what a run logs, caches, judges, draws and prints; `launch`: `accelerate launch`
  for multi-process runs; `batching`, `packing`, `speed`: dpo's batch order and padding-free
  pairs; `tracking`: experiment trackers; `run_record`: run.json's status.

Importing this package (or any module but `callbacks`) loads no torch.
"""
