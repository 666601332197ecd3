#!/usr/bin/env bash
# The GPU benchmark suite, in at most 5 minutes, as ONE table (docs/BENCHMARKS.md, GPU section).
#
#   bash benchmarks/vendor.sh          # once, on a machine with PyPI: open_clip + deps -> benchmarks/vendor/
#   OUT=/some/dir bash benchmarks/gpu.sh
#
# Order: measured ceilings (bf16 / tf32 matmul 8192^3, device-to-device copy) so MFU divides by what
# this card really does; the trainer's own step (partsearch.train.step) on the shipped configs
# cuhk_r50_bert, cuhk_vitb16_bert, cuhk_clip_vitb16 (random weights, batch 64, 384x128, the
# configs' switches: bf16 autocast), then cuhk_r50_bert with channels_last + fused Adam on; encode
# through the evaluation's code (gallery images/s, queries/s); retrieval metrics at ICFG-PEDES
# size; last, cuhk_vitb16_bert with train.compile=true in whatever budget is left. Each part has
# its own time limit and its own try/except; the table so far is written to $OUT (gpu_table.md,
# gpu.json, gpu.log) after every part, so even a hard kill keeps what was measured. Installs
# nothing, needs no network. Without a GPU (PYTHON=.venv/bin/python bash benchmarks/gpu.sh) it
# runs the same parts on the CPU at a small size: a check of the code paths, not figures.
set -uo pipefail
cd "$(dirname "$0")/.."
# The first interpreter that has torch (PYTHON=.venv/bin/python to try it here).
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for candidate in python3 python; do
    if "$candidate" -c "import torch" >/dev/null 2>&1; then PY=$candidate; break; fi
  done
  PY=${PY:-python3}
fi
BUDGET_S=${BUDGET_S:-250}   # the Python suite's own budget; the hard cap below leaves room for start-up
export PYTHONPATH="$PWD/src:$PWD/benchmarks/vendor:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
LOG=/dev/null
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT" && LOG="$OUT/gpu.log"; fi
stamp() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$LOG" >&2; }

stamp "gpu.sh: start ($(hostname), budget ${BUDGET_S}s, hard cap $((BUDGET_S + 35))s)"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv 2>&1 | tee -a "$LOG"
else
  stamp "no nvidia-smi on this machine"
fi
# Which optional imports work here; a setting whose import fails is skipped with its reason.
"$PY" - <<'PYEOF' 2>&1 | tee -a "$LOG"
import importlib
for name in ("torch", "torchvision", "transformers", "timm", "open_clip", "yaml", "partsearch"):
    try:
        module = importlib.import_module(name)
        print(f"import {name}: ok {getattr(module, '__version__', '')}")
    except Exception as err:
        print(f"import {name}: FAILED ({type(err).__name__}: {err})")
PYEOF
timeout -k 5 "$((BUDGET_S + 35))" "$PY" -m benchmarks gpu --budget-s "$BUDGET_S" ${OUT:+--out "$OUT"} 2>&1 | tee -a "$LOG"
code=${PIPESTATUS[0]}
if [ "$code" = 124 ] || [ "$code" = 137 ]; then stamp "gpu.sh: the suite hit the hard cap; the table in \$OUT holds the parts that finished"; fi
stamp "gpu.sh: end (exit $code)"
exit "$code"
