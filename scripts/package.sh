#!/usr/bin/env bash
# Builds the deployable Functions package in one command:
#
#   scripts/package.sh [--target TRIPLE]
#       ->  dist/functionapp/      (the folder `func azure functionapp publish` runs in)
#           dist/functionapp.zip   (for `az functionapp deployment source config-zip`)
#
# The handler is linked against glibc 2.28 (the oldest glibc of the Functions Linux images) with
# cargo-zigbuild and zig as the linker, so it starts on every image, whatever machine built it:
# Linux x86_64, Linux arm64 or macOS. Tools come from PyPI into .venv/ (pinned in
# scripts/requirements.txt); nothing else is downloaded at build time.
#
#   --target x86_64-unknown-linux-gnu    (default) what Azure Functions on Linux runs
#   --target aarch64-unknown-linux-gnu   an arm64 Linux build (for arm64 hosts outside Azure
#                                        Functions, whose Linux workers are x86_64)
#
# Cross-compiling needs the Rust standard library of the target (`rustup target add <triple>`);
# zig supplies the linker and the C library, not Rust's std. The script checks for it first.
# The package holds exactly host.json, handler (mode 0755) and every top-level folder that
# contains a function.json; scripts/test_package.py checks it.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-gnu
GLIBC=2.28
VENV=${VENV:-.venv}
DIST=dist
APP="$DIST/functionapp"

usage() {
    echo "usage: scripts/package.sh [--target x86_64-unknown-linux-gnu|aarch64-unknown-linux-gnu]" >&2
    exit 2
}
while [[ $# -gt 0 ]]; do
    case "$1" in
        --target)
            [[ $# -ge 2 ]] || usage
            TARGET=$2
            shift 2
            ;;
        --target=*)
            TARGET=${1#--target=}
            shift
            ;;
        -h | --help) usage ;;
        *)
            echo "package: unknown argument $1" >&2
            usage
            ;;
    esac
done
case "$TARGET" in
    x86_64-unknown-linux-gnu | aarch64-unknown-linux-gnu) ;;
    *)
        echo "package: target $TARGET is not supported (the Functions host runs glibc Linux: x86_64-unknown-linux-gnu, or aarch64-unknown-linux-gnu)" >&2
        exit 2
        ;;
esac

# The Rust standard library for the target must be installed: zig links, it does not provide std.
sysroot=$(rustc --print sysroot)
if ! compgen -G "$sysroot/lib/rustlib/$TARGET/lib/libstd-*.rlib" >/dev/null; then
    echo "package: the Rust standard library for $TARGET is not installed (no $sysroot/lib/rustlib/$TARGET/lib/libstd-*.rlib)." >&2
    echo "package: install it once with:  rustup target add $TARGET" >&2
    exit 1
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV"
fi
# pip does nothing (and needs no network) when the pinned versions are already installed.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
# cargo-zigbuild finds zig through `python3 -m ziglang` on PATH: the venv's python comes first.
export PATH="$PWD/$VENV/bin:$PATH"

cargo zigbuild --release --locked --target "$TARGET.$GLIBC" --bin handler

binary="${CARGO_TARGET_DIR:-target}/$TARGET/release/handler"
[[ -x "$binary" ]] || { echo "package: $binary was not built" >&2; exit 1; }

rm -rf "$APP" "$DIST/functionapp.zip"
mkdir -p "$APP"
cp host.json "$APP/"
install -m 0755 "$binary" "$APP/handler"
# [profile.release] already strips symbols (strip = "symbols"). llvm-strip, where installed, also
# removes what is left; GNU strip is not used: it cannot read a foreign-architecture ELF, and
# macOS's strip cannot read ELF at all.
if command -v llvm-strip >/dev/null 2>&1; then
    llvm-strip --strip-all "$APP/handler"
fi

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

size=$(wc -c <"$APP/handler" | tr -d ' ')
echo "package: functions: ${functions[*]}"
echo "package: handler $size bytes, target $TARGET glibc $GLIBC"
