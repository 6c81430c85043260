#!/usr/bin/env bash
# Runs hoist's whole test suite: unit tests and the end-to-end tests that drive
# real git, a real pm2 and a real Node.js app on this machine.
#
#   scripts/test.sh                    everything
#   scripts/test.sh manifest_edit      only tests whose name contains this
#   HOIST_TEST_THREADS=1 scripts/test.sh   one test at a time (default: 4 with
#                                          cargo-nextest, else 2)
#   HOIST_TEST_NO_NEXTEST=1 scripts/test.sh   cargo test even when nextest is installed
#
# Needs the Rust toolchain (cargo), git, node (>= 18), zstd, ssh-keygen and
# minisign (the signature tests sign with real keys); npm too when pm2 is not
# installed. What it may install:
#   - pm2, when no `pm2` is on PATH: `npm install pm2@7` into .tools/pm2/
#     inside this checkout (git-ignored; delete the folder to remove it).
#     Nothing is installed globally.
#   - git, zstd, minisign, age and OpenSSH's sshd and ssh-keygen (the tests
#     in tests/remotes.rs start a real sshd on a loopback port; the signature
#     tests sign with ssh-keygen and minisign; the sealed-secret tests check
#     that the reference age tool and hoist open each other's files), when
#     missing and only if run as root on a system with apt-get: `apt-get
#     install -y git zstd minisign age openssh-server openssh-client`. Otherwise it names what is missing and
#     stops. The S3 server the tests use (s3s-fs) is a dev-dependency, built
#     by cargo like the rest.
# Run it as root: tests/least_privilege.rs (and a few others) run hoist as
# the systemd unit does, as the stock user `daemon` with the unit's
# capabilities (setpriv, from util-linux), and the apps as `nobody`; they
# fail without root.
# The tests use the pm2 named by HOIST_TEST_PM2 (exported here; set it
# yourself to use another pm2). Each test runs pm2 with its own PM2_HOME, so
# the pm2 processes of the user running the tests are left alone.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo_root=$(pwd)

script=scripts/test.sh
source scripts/lib.sh

# System tools: these can be installed here, the others cannot.
missing_apt=()
for tool in git zstd ssh-keygen minisign age; do
    package=$tool
    [[ $tool == ssh-keygen ]] && package=openssh-client
    command -v "$tool" >/dev/null 2>&1 || missing_apt+=("$package")
done
[[ -x /usr/sbin/sshd ]] || missing_apt+=(openssh-server)
apt_install "${missing_apt[@]}"
need_cargo_and_node

find_pm2
echo "scripts/test.sh: using $HOIST_TEST_PM2" >&2

# With cargo-nextest (preinstalled on many CI images), the tests of every
# file run side by side: most of an end-to-end test is waiting on pm2 and
# node, so 4 at a time on 2 cores finish in about half the time. Without it,
# cargo test runs one file after the other.
if [[ -z ${HOIST_TEST_NO_NEXTEST:-} ]] && cargo nextest --version >/dev/null 2>&1; then
    # The benchmark harness is not a test binary: only built, like cargo
    # test --all-targets builds it.
    cargo test --locked --benches --no-run
    exec cargo nextest run --locked --lib --bins --tests --no-fail-fast \
        -j "${HOIST_TEST_THREADS:-4}" "$@"
fi
exec cargo test --locked --all-targets -- --test-threads "${HOIST_TEST_THREADS:-2}" "$@"
