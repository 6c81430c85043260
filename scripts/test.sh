#!/usr/bin/env bash
# Runs hoist's whole test suite: unit tests and the end-to-end tests that drive
# real git, a real pm2 and a real Node.js app on this machine.
#
#   scripts/test.sh                    everything
#   scripts/test.sh manifest_edit      only tests whose name contains this
#   HOIST_TEST_THREADS=1 scripts/test.sh   one test at a time (default: 2)
#
# Needs the Rust toolchain (cargo), git, node (>= 18), zstd, ssh-keygen and
# minisign (the signature tests sign with real keys); npm too when pm2 is not
# installed. What it may install:
#   - pm2, when no `pm2` is on PATH: `npm install pm2@7` into .tools/pm2/
#     inside this checkout (git-ignored; delete the folder to remove it).
#     Nothing is installed globally.
#   - git, zstd, minisign and OpenSSH's sshd and ssh-keygen (the tests in
#     tests/remotes.rs start a real sshd on a loopback port; the signature
#     tests sign with ssh-keygen and minisign), when missing and only if run
#     as root on a system with apt-get: `apt-get install -y git zstd minisign
#     openssh-server openssh-client`. Otherwise it names what is missing and
#     stops. The S3 server the tests use (s3s-fs) is a dev-dependency, built
#     by cargo like the rest.
# The tests use the pm2 named by HOIST_TEST_PM2 (exported here; set it
# yourself to use another pm2). Each test runs pm2 with its own PM2_HOME, so
# the pm2 processes of the user running the tests are left alone.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo_root=$(pwd)

die() {
    echo "scripts/test.sh: $*" >&2
    exit 1
}

# System tools: these can be installed here, the others cannot.
missing_apt=()
for tool in git zstd ssh-keygen minisign; do
    package=$tool
    [[ $tool == ssh-keygen ]] && package=openssh-client
    command -v "$tool" >/dev/null 2>&1 || missing_apt+=("$package")
done
[[ -x /usr/sbin/sshd ]] || missing_apt+=(openssh-server)
if ((${#missing_apt[@]} > 0)); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "scripts/test.sh: installing ${missing_apt[*]} with apt-get" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${missing_apt[@]}"
    else
        die "missing ${missing_apt[*]}: install it (e.g. sudo apt-get install ${missing_apt[*]}) and run again"
    fi
fi
command -v cargo >/dev/null 2>&1 || die "missing cargo: install the Rust toolchain (https://rustup.rs) and run again"
command -v node >/dev/null 2>&1 || die "missing node: install Node.js 18 or newer and run again"
node_major=$(node -p 'process.versions.node.split(".")[0]')
((node_major >= 18)) || die "node $(node --version) is too old: the tests need Node.js 18 or newer"

# pm2: an explicit HOIST_TEST_PM2 wins, then one on PATH, then our own copy.
local_pm2="$repo_root/.tools/pm2/node_modules/.bin/pm2"
if [[ -n ${HOIST_TEST_PM2:-} ]]; then
    given=$HOIST_TEST_PM2
    [[ $given == */* ]] || HOIST_TEST_PM2=$(command -v "$given" || true)
    [[ -n $HOIST_TEST_PM2 && -x $HOIST_TEST_PM2 ]] || die "HOIST_TEST_PM2=$given is not an executable pm2"
elif command -v pm2 >/dev/null 2>&1; then
    HOIST_TEST_PM2=$(command -v pm2)
else
    if [[ ! -x $local_pm2 ]]; then
        command -v npm >/dev/null 2>&1 || die "missing pm2 and npm to install it: install npm (or pm2) and run again"
        echo "scripts/test.sh: installing pm2 into .tools/pm2" >&2
        npm install --prefix "$repo_root/.tools/pm2" --no-audit --no-fund pm2@7
    fi
    HOIST_TEST_PM2=$local_pm2
fi
# An absolute path, whatever the route taken above.
HOIST_TEST_PM2=$(cd "$(dirname "$HOIST_TEST_PM2")" && pwd)/$(basename "$HOIST_TEST_PM2")
export HOIST_TEST_PM2
echo "scripts/test.sh: using $HOIST_TEST_PM2" >&2

exec cargo test --locked --all-targets -- --test-threads "${HOIST_TEST_THREADS:-2}" "$@"
