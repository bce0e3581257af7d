#!/usr/bin/env bash
# Fetch perf_analyzer 2.51 (from the tritonclient 2.51.0 wheel) into a cache dir, idempotently.
# Prints the path of a wrapper script that runs it with the libraries it needs.
#   usage: benchmarks/fetch_perf_analyzer.sh [CACHE_DIR]   (default ~/.cache/tritonfleet/perf_analyzer)
# Needs: pip (of the project's venv), unzip or python, Debian's libb64-0d.
set -euo pipefail
CACHE="${1:-$HOME/.cache/tritonfleet/perf_analyzer}"
PY="${PYTHON:-/work/main/.venv/bin/python}"
WRAPPER="$CACHE/perf_analyzer"
if [[ -x "$WRAPPER" ]]; then echo "$WRAPPER"; exit 0; fi
mkdir -p "$CACHE/wheel" "$CACHE/lib"
if ! ls "$CACHE"/wheel/tritonclient-2.51.0-*manylinux*x86_64.whl >/dev/null 2>&1; then
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux1_x86_64 \
    --python-version 3.11 -d "$CACHE/wheel" "tritonclient==2.51.0" >&2
fi
WHEEL=$(ls "$CACHE"/wheel/tritonclient-2.51.0-*manylinux*x86_64.whl | head -1)
"$PY" - "$WHEEL" "$CACHE/unpacked" <<'PYEOF'
import sys, zipfile, pathlib
wheel, dest = sys.argv[1], pathlib.Path(sys.argv[2])
if not dest.exists():
    with zipfile.ZipFile(wheel) as z:
        z.extractall(dest)
PYEOF
BIN=$(find "$CACHE/unpacked" -path '*data/bin/perf_analyzer' -type f | head -1)
[[ -n "$BIN" ]] || { echo "perf_analyzer not found in $WHEEL" >&2; exit 1; }
chmod +x "$BIN"
PYTRITON_LIBS=$("$PY" -c 'import pathlib, pytriton; print(pathlib.Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs")')
CUDART=$(ls "$PYTRITON_LIBS"/libcudart-*.so.12* | head -1)
[[ -n "$CUDART" ]] || { echo "no libcudart in $PYTRITON_LIBS (pip install nvidia-pytriton)" >&2; exit 1; }
ln -sf "$CUDART" "$CACHE/lib/libcudart.so.12"
if ! ldconfig -p | grep -q libb64.so.0d; then
  echo "warning: libb64 not found; on Debian/Ubuntu: apt-get install -y libb64-0d" >&2
fi
cat > "$WRAPPER.tmp" <<WEOF
#!/usr/bin/env bash
export LD_LIBRARY_PATH="$CACHE/lib:$PYTRITON_LIBS\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
exec "$BIN" "\$@"
WEOF
chmod +x "$WRAPPER.tmp" && mv "$WRAPPER.tmp" "$WRAPPER"
echo "$WRAPPER"
