#!/usr/bin/env bash
# Builds the deployable Functions package in one command:
#
#   scripts/package.sh      ->  dist/functionapp/      (the folder `func azure functionapp publish` runs in)
#                               dist/functionapp.zip   (for `az functionapp deployment source config-zip`)
#
# The handler is linked against glibc 2.28 (the oldest glibc of the Functions Linux images) with
# cargo-zigbuild, so it starts on every image, whatever distribution built it. Tools come from
# PyPI into .venv/ (pinned in scripts/requirements.txt); nothing is downloaded at build time.
# The package holds exactly host.json, handler (mode 0755) and every top-level folder that
# contains a function.json; scripts/test_package.py checks it.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-gnu
GLIBC=2.28
VENV=${VENV:-.venv}
DIST=dist
APP="$DIST/functionapp"

if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
# cargo-zigbuild finds zig through `python3 -m ziglang` on PATH: the venv's python comes first.
export PATH="$PWD/$VENV/bin:$PATH"

# The target is the host's own triple (only the glibc version suffix differs), so the standard
# library already installed with the toolchain is used: no `rustup target add` is needed.
cargo zigbuild --release --locked --target "$TARGET.$GLIBC" --bin handler

binary="target/$TARGET/release/handler"
[[ -x "$binary" ]] || { echo "package: $binary was not built" >&2; exit 1; }

rm -rf "$APP" "$DIST/functionapp.zip"
mkdir -p "$APP"
cp host.json "$APP/"
install -m 0755 "$binary" "$APP/handler"
# [profile.release] already strips symbols; strip again so a build without that profile is as small.
strip --strip-all "$APP/handler"

functions=()
for dir in */; do
    dir=${dir%/}
    case "$dir" in dist | target | node_modules) continue ;; esac
    if [[ -f "$dir/function.json" ]]; then
        functions+=("$dir")
        mkdir -p "$APP/$dir"
        cp "$dir/function.json" "$APP/$dir/"
    fi
done
if [[ ${#functions[@]} -eq 0 ]]; then
    echo "package: no top-level folder with a function.json" >&2
    exit 1
fi

# zip(1) would also work; Python writes the Unix mode into each entry's external attributes
# explicitly (0755 for handler, 0644 otherwise) and the entries in a stable order.
python3 - "$APP" "$DIST/functionapp.zip" <<'PY'
import os, sys, zipfile
root, out = sys.argv[1], sys.argv[2]
files = sorted(
    os.path.relpath(os.path.join(d, f), root)
    for d, _, names in os.walk(root) for f in names
)
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    for rel in files:
        info = zipfile.ZipInfo(rel, date_time=(2020, 1, 1, 0, 0, 0))
        info.create_system = 3  # Unix, so the mode below is honoured when the platform unpacks it
        mode = 0o100755 if rel == "handler" else 0o100644
        info.external_attr = mode << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(os.path.join(root, rel), "rb") as f:
            z.writestr(info, f.read())
print(f"package: {out}: {len(files)} entries")
PY

size=$(stat -c %s "$APP/handler")
echo "package: functions: ${functions[*]}"
echo "package: handler $size bytes, target $TARGET glibc $GLIBC"
