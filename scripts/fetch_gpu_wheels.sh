#!/usr/bin/env bash
# scripts/fetch_gpu_wheels.sh   (run here, with network; fills .whl/ for scripts/gpu_bench.sh)
#
# The GPU machine has CUDA PyTorch, transformers, accelerate and PEFT but no TRL, datasets,
# bitsandbytes or DeepSpeed, and no network. This downloads, for CPython 3.12 on manylinux
# x86_64, the wheels it lacks (the versions installed here) without their dependencies, slims
# pyarrow and pandas (scripts/bench/slim_wheel.py), and copies SmolLM2's tokenizer files:
#   .whl/        what gpu_bench.sh needs, under BUDGET_MIB (one device call carries 64 MiB in all);
#   .whl-extra/  bitsandbytes (QLoRA), which does not fit beside them: carry it in a second call
#                (`scripts/gpu_bench.sh --install-only`), the install persists on a warm machine.
# Both folders are git-ignored. Prints every file's size and the totals.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${OUT:-$ROOT/.whl}"
EXTRA="${EXTRA:-$ROOT/.whl-extra}"
BUDGET_MIB="${BUDGET_MIB:-60}"
PY="${PY:-$ROOT/../../main/.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
TOKENIZER="${TOKENIZER:-$ROOT/.cache/models/smollm2-135m-instruct}"

REQUIRED=(trl datasets pyarrow pandas python-dateutil dill multiprocess xxhash)
SECOND_CALL=(bitsandbytes)

version() { "$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }
fetch() {  # fetch NAME DIR
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d "$2" "$1==$(version "$1")"
}
mib() { du -sm "$1" | cut -f1; }

rm -rf "$OUT" "$EXTRA"
mkdir -p "$OUT" "$EXTRA"
for name in "${REQUIRED[@]}"; do
  fetch "$name" "$OUT"
done
"$PY" "$ROOT/scripts/bench/slim_wheel.py" "$OUT"/*.whl
if [ -f "$TOKENIZER/tokenizer.json" ]; then
  mkdir -p "$OUT/tokenizer"
  cp "$TOKENIZER"/tokenizer.json "$TOKENIZER"/tokenizer_config.json "$OUT/tokenizer/"
  if [ -f "$TOKENIZER/chat_template.jinja" ]; then cp "$TOKENIZER/chat_template.jinja" "$OUT/tokenizer/"; fi
else
  echo "note: no tokenizer at $TOKENIZER; gpu_bench.sh will use the tiny offline tokenizer" >&2
fi
not_fetched=()
for name in "${SECOND_CALL[@]}"; do
  fetch "$name" "$EXTRA" 2>/dev/null || not_fetched+=("$name")
done

echo "$OUT:"
du -sk "$OUT"/* | awk '{printf "  %8.1f MiB  %s\n", $1 / 1024, $2}'
echo "  total $(mib "$OUT") MiB (budget $BUDGET_MIB MiB)"
echo "$EXTRA (a second device call; did not fit beside the above):"
du -sk "$EXTRA"/* 2>/dev/null | awk '{printf "  %8.1f MiB  %s\n", $1 / 1024, $2}'
if [ ${#not_fetched[@]} -gt 0 ]; then echo "no wheel for this platform: ${not_fetched[*]}"; fi
echo "not carried at all: deepspeed (not needed), flash-attn (hundreds of MiB; its cases run only where it is installed)"
if [ "$(mib "$OUT")" -gt "$BUDGET_MIB" ]; then
  echo "error: $OUT is over $BUDGET_MIB MiB" >&2
  exit 1
fi
