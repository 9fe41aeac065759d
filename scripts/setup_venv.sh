#!/usr/bin/env bash
# Create (if missing) and install the project's virtual environment.
#
#   bash scripts/setup_venv.sh [VENV_DIR]        (default .venv; `make setup` calls this)
#
# CPU-only machines: torch is installed first at the pinned version and every pip call runs with
# PIP_CONSTRAINT="constraints.txt requirements.lock", so pip can never swap in a CUDA torch plus gigabytes of
# nvidia-* wheels, and every other package gets the exact version of the lock (`make lock` refreshes it).
# A dry run checks what the torch install would pull before anything is downloaded.
# The PyPI torchvision wheel is CUDA-only; where it cannot load its ops on this torch, a small shim is
# installed into the venv's site-packages (scripts/tv_cpu_shim*.py); where torchvision works, nothing is done.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv}"
TORCH_VERSION="$(sed -n 's/^torch==\([^ ]*\).*/\1/p' constraints.txt)"
# Relative paths (we are in the repository root): pip splits PIP_CONSTRAINT on whitespace.
export PIP_CONSTRAINT="constraints.txt requirements.lock"
export PIP_DISABLE_PIP_VERSION_CHECK=1

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q -U pip
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip)

if ! "$PY" -c "import torch,sys; sys.exit(0 if torch.__version__.split('+')[0]=='$TORCH_VERSION' else 1)" 2>/dev/null; then
    if ! has_gpu; then
        report="$(mktemp)"
        "${PIP[@]}" install -q --dry-run --ignore-installed --report "$report" "torch==$TORCH_VERSION"
        if "$PY" - "$report" <<'PYEOF'
import json, sys
names = [i["metadata"]["name"].lower() for i in json.load(open(sys.argv[1]))["install"]]
bad = [n for n in names if n.startswith(("nvidia-", "cuda-")) or n == "triton"]
sys.exit(1 if bad else 0)
PYEOF
        then :; else
            echo "[setup] ERROR: on this CPU-only machine 'pip install torch==$TORCH_VERSION' would download CUDA packages." >&2
            echo "[setup] Point pip at a CPU build first, e.g. PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu make setup" >&2
            exit 1
        fi
        rm -f "$report"
    fi
    echo "[setup] installing torch==$TORCH_VERSION"
    "${PIP[@]}" install -q "torch==$TORCH_VERSION"
fi

echo "[setup] installing cxr and its dependencies (constraints: $(grep -v "^#" constraints.txt | tr "\n" " ")+ requirements.lock)"
"${PIP[@]}" install -q -e ".[dev]"

# torchvision: fix the CUDA-only wheel only where it is actually broken.
if ! "$PY" -c "import torchvision" >/dev/null 2>&1; then
    SP="$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")"
    echo "[setup] torchvision cannot load its ops on this torch: installing the CPU shim into $SP"
    cp scripts/tv_cpu_shim.py scripts/tv_cpu_shim_hook.py "$SP/"
    echo "import tv_cpu_shim_hook" > "$SP/tv_cpu_shim.pth"
    "$PY" -c "import torchvision, timm, lightning, torchmetrics, peft" \
        || { echo "[setup] ERROR: torchvision still fails to import after the shim" >&2; exit 1; }
fi

# Guards: a CPU-only machine must never end up with CUDA wheels.
if ! has_gpu; then
    if "${PIP[@]}" list --format=freeze 2>/dev/null | grep -iE '^(nvidia-|cuda-|triton==)'; then
        echo "[setup] ERROR: CUDA packages were installed on a CPU-only machine (listed above)." >&2
        exit 1
    fi
fi
# The lock must be honoured (pip enforced it for locked packages; this also catches unlocked ones).
"$PY" scripts/lock.py check || { echo "[setup] ERROR: the venv differs from requirements.lock" >&2; exit 1; }
"$PY" -c "import torch, cxr; print(f'[setup] ok: torch {torch.__version__}, cxr {cxr.__version__}')"
