# Shared by scripts/test.sh and scripts/bench.sh, which source it after
# setting $script (their name, for messages) and $repo_root: finding or
# installing what they need. Not meant to be run on its own.

die() {
    echo "$script: $*" >&2
    exit 1
}

# Installs the Debian packages named with apt-get, when run as root on a
# system that has it; otherwise names them and stops. None named: nothing.
apt_install() {
    (($# > 0)) || return 0
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "$script: installing $* with apt-get" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "$@"
    else
        die "missing $*: install it (e.g. sudo apt-get install $*) and run again"
    fi
}

# Sets and exports HOIST_TEST_PM2, an absolute path to pm2: an explicit
# HOIST_TEST_PM2 wins, then one on PATH, then our own copy in .tools/pm2
# (installed with npm the first time).
find_pm2() {
    local local_pm2="$repo_root/.tools/pm2/node_modules/.bin/pm2"
    if [[ -n ${HOIST_TEST_PM2:-} ]]; then
        local given=$HOIST_TEST_PM2
        [[ $given == */* ]] || HOIST_TEST_PM2=$(command -v "$given" || true)
        [[ -n $HOIST_TEST_PM2 && -x $HOIST_TEST_PM2 ]] || die "HOIST_TEST_PM2=$given is not an executable pm2"
    elif command -v pm2 >/dev/null 2>&1; then
        HOIST_TEST_PM2=$(command -v pm2)
    else
        if [[ ! -x $local_pm2 ]]; then
            command -v npm >/dev/null 2>&1 || die "missing pm2 and npm to install it: install npm (or pm2) and run again"
            echo "$script: installing pm2 into .tools/pm2" >&2
            npm install --prefix "$repo_root/.tools/pm2" --no-audit --no-fund pm2@7
        fi
        HOIST_TEST_PM2=$local_pm2
    fi
    # An absolute path, whatever the route taken above.
    HOIST_TEST_PM2=$(cd "$(dirname "$HOIST_TEST_PM2")" && pwd)/$(basename "$HOIST_TEST_PM2")
    export HOIST_TEST_PM2
}

# Stops unless cargo and Node.js 18 or newer are on PATH.
need_cargo_and_node() {
    command -v cargo >/dev/null 2>&1 || die "missing cargo: install the Rust toolchain (https://rustup.rs) and run again"
    command -v node >/dev/null 2>&1 || die "missing node: install Node.js 18 or newer and run again"
    local node_major
    node_major=$(node -p 'process.versions.node.split(".")[0]')
    ((node_major >= 18)) || die "node $(node --version) is too old: Node.js 18 or newer is needed"
}
