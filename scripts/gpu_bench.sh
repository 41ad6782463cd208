#!/usr/bin/env bash
# scripts/gpu_bench.sh [--cpu-check] [--install-only] [gpu_bench.py options]
#
# One command on one H100/H200, within 8 minutes: `dpo train` against plain TRL, LoRA bf16 and
# QLoRA NF4, length-grouped and padding-free (SDPA, and FlashAttention 2 where installed), on a
# ~0.5B Llama built from a config and real-length pairs; the table goes to runs/gpu-bench/.
#
# The GPU machine has CUDA PyTorch, transformers, accelerate and PEFT, but no TRL, datasets or
# bitsandbytes, and no network. Fill .whl/ here first (scripts/fetch_gpu_wheels.sh) and carry it;
# this installs those wheels offline into .gpu-site/ (git-ignored, kept between calls on a warm
# machine) and puts it on PYTHONPATH. bitsandbytes does not fit in the same carry: carry
# .whl-extra/ in an earlier call with `--install-only`, or the QLoRA cases are skipped.
# `--cpu-check` runs the same pipeline on the CPU with a tiny model (what the test suite runs).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
SITE="${GPU_SITE:-$ROOT/.gpu-site}"
WHEELS="${GPU_WHEELS-$ROOT/.whl $ROOT/.whl-extra}"  # folders of wheels to install, space-separated

install_only=0
args=()
for arg in "$@"; do
  if [ "$arg" = "--install-only" ]; then install_only=1; else args+=("$arg"); fi
done

installed=0
for dir in $WHEELS; do
  if compgen -G "$dir/*.whl" > /dev/null; then
    "$PY" -m pip install --quiet --no-index --no-deps --upgrade --target "$SITE" "$dir"/*.whl
    installed=1
  fi
done
if [ -d "$SITE" ]; then
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ "$installed" = 1 ]; then echo "gpu_bench: installed the carried wheels into $SITE"; fi
[ "$install_only" = 1 ] && exit 0

missing="$("$PY" - <<'EOF'
import importlib.util
print(" ".join(m for m in ("torch", "transformers", "accelerate", "peft", "datasets", "trl")
               if importlib.util.find_spec(m) is None))
EOF
)"
if [ -n "$missing" ]; then
  echo "gpu_bench: missing Python packages: $missing" >&2
  echo "  run scripts/fetch_gpu_wheels.sh on a machine with network and carry .whl/ here" >&2
  exit 2
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" "$ROOT/scripts/gpu_bench.py" ${args[@]+"${args[@]}"}
