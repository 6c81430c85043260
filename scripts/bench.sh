#!/usr/bin/env bash
# Runs hoist's benchmarks against what users would use instead (curl +
# sha256sum + tar, pm2 by hand, git ls-remote) and prints one table:
# measure | hoist | baseline | target | verdict. docs/benchmarks.md explains
# every row and holds the last results. Takes about 15 minutes and a few GB
# of disk under target/ and $TMPDIR; not part of the test suite.
#
#   scripts/bench.sh                     every row
#   HOIST_BENCH_ROWS=idle,fleet scripts/bench.sh    only these rows
#   HOIST_BENCH_SCALE=small scripts/bench.sh        tiny sizes (for working on
#                                                   the harness, not for numbers)
#
# Needs the Rust toolchain, node (>= 18) and npm. What it may install, like
# scripts/test.sh:
#   - pm2, when none is on PATH (and HOIST_TEST_PM2 is unset):
#     `npm install pm2@7` into .tools/pm2/;
#   - s3s-fs, the S3 server the S3 rows download from, when HOIST_TEST_S3S is
#     unset: `cargo install s3s-fs@0.14.1` into .tools/s3s/;
#   - curl, wrk, zstd, git, rsync and OpenSSH (client and server), when
#     missing and only if run as root on a system with apt-get. Otherwise it
#     names what is missing and stops.
# .tools/ is git-ignored; delete it to remove what was installed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo_root=$(pwd)

script=scripts/bench.sh
source scripts/lib.sh

missing_apt=()
for tool in git zstd curl wrk rsync; do
    command -v "$tool" >/dev/null 2>&1 || missing_apt+=("$tool")
done
# The rsync-over-SSH row's servers sit behind a real sshd.
command -v ssh >/dev/null 2>&1 || missing_apt+=(openssh-client)
[[ -x /usr/sbin/sshd ]] || missing_apt+=(openssh-server)
apt_install "${missing_apt[@]}"
need_cargo_and_node

find_pm2
export HOIST_BENCH_PM2=$HOIST_TEST_PM2

# s3s-fs: HOIST_TEST_S3S wins, then our own copy, built once.
local_s3s="$repo_root/.tools/s3s/bin/s3s-fs"
if [[ -n ${HOIST_TEST_S3S:-} ]]; then
    s3s=$HOIST_TEST_S3S
else
    if [[ ! -x $local_s3s ]]; then
        echo "scripts/bench.sh: building s3s-fs into .tools/s3s (once; a few minutes)" >&2
        CARGO_TARGET_DIR="$repo_root/.tools/s3s-build" \
            cargo install s3s-fs@0.14.1 --locked --features binary --root "$repo_root/.tools/s3s"
        rm -rf "$repo_root/.tools/s3s-build"
    fi
    s3s=$local_s3s
fi
export HOIST_BENCH_S3S=$s3s
echo "scripts/bench.sh: pm2 $HOIST_BENCH_PM2, s3s-fs $HOIST_BENCH_S3S; load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

exec cargo bench --locked --bench compare
