#!/usr/bin/env bash
# Fuzzes the parsers that meet hostile input: the manifest parser (text
# from whoever can push to the config repo), the unpacker (archives from
# whoever can write to the object store) and the commit-status readers (the
# forges' JSON pages and the `file` provider's lines, from whoever can post
# a status), with the rollout gate deciding on what they read. Each target runs for a bounded time;
# any crash, panic or invariant failure stops the run and is saved under
# fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh             60 seconds per target
#   scripts/fuzz.sh 600         ten minutes per target
#   scripts/fuzz.sh 600 unpack  one target
#   targets: manifest, unpack, status_readers
#
# Needs a nightly toolchain (`rustup toolchain install nightly`) and
# cargo-fuzz; cargo-fuzz is installed with `cargo install cargo-fuzz --locked`
# when missing. The corpus grows in fuzz/corpus/ (git-ignored) and starts from
# the seeds in fuzz/seeds/.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds=${1:-60}
shift || true
targets=("$@")
((${#targets[@]} > 0)) || targets=(manifest unpack status_readers)

die() {
    echo "scripts/fuzz.sh: $*" >&2
    exit 1
}

rustup run nightly rustc --version >/dev/null 2>&1 ||
    die "no nightly toolchain: run \`rustup toolchain install nightly\` and run again"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "scripts/fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

cd fuzz
cargo +nightly fuzz build -O
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "scripts/fuzz.sh: fuzzing $t for ${seconds}s" >&2
    cargo +nightly fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
