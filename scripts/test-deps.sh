#!/bin/sh
# What `make test` needs beyond the venv: node, npm and php for the example receivers'
# tests (tests/test_example_receivers.py), chromium for the console's browser tests,
# PostgreSQL's initdb and pg_ctl for the store's tests on PostgreSQL (tests/pg.py).
# As root, missing tools come from Debian's packages; otherwise this only says what is
# missing, and the tests that need it skip with that reason. Never fails the build:
# a tool that cannot be had is a skip, not an error. Quick when everything is there.
set -u
cd "$(dirname "$0")/.."

# tool -> Debian package (only missing tools are installed: a node from another source
# that bundles its own npm is left alone)
missing_pkgs=""
missing_tools=""
for pair in node:nodejs npm:npm php:php-cli chromium:chromium; do
    tool=${pair%%:*}
    pkg=${pair#*:}
    if ! command -v "$tool" >/dev/null 2>&1; then
        missing_tools="$missing_tools $tool"
        missing_pkgs="$missing_pkgs $pkg"
    fi
done

# PostgreSQL: Debian keeps initdb and pg_ctl in /usr/lib/postgresql/<version>/bin, off
# PATH; tests/pg.py looks in both places, so this does too
has_pg_tool() {
    command -v "$1" >/dev/null 2>&1 && return 0
    for dir in /usr/lib/postgresql/*/bin; do
        [ -x "$dir/$1" ] && return 0
    done
    return 1
}
for tool in initdb pg_ctl; do
    if ! has_pg_tool "$tool"; then
        missing_tools="$missing_tools $tool"
        case " $missing_pkgs " in *" postgresql "*) ;; *) missing_pkgs="$missing_pkgs postgresql" ;; esac
    fi
done

if [ -n "$missing_pkgs" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "test-deps: installing$missing_pkgs (missing:$missing_tools)"
        # wait for a dpkg lock held by another apt run instead of failing at once
        apt_opts="-o DPkg::Lock::Timeout=300 -q"
        if apt-get $apt_opts update >/dev/null \
            && DEBIAN_FRONTEND=noninteractive apt-get $apt_opts install -y \
                --no-install-recommends $missing_pkgs >/dev/null; then
            echo "test-deps: installed$missing_pkgs"
        else
            echo "test-deps: apt-get could not install$missing_pkgs; their tests will skip" >&2
        fi
    else
        echo "test-deps: missing$missing_tools (Debian:$missing_pkgs); not root, so not" \
            "installing; their tests will skip" >&2
    fi
fi

# the Node receiver's dependencies, exactly as locked; again when the lock changes
node_dir=examples/receivers/node
if command -v npm >/dev/null 2>&1 \
    && { [ ! -f "$node_dir/node_modules/.package-lock.json" ] \
        || [ "$node_dir/package-lock.json" -nt "$node_dir/node_modules/.package-lock.json" ]; }; then
    echo "test-deps: npm ci in $node_dir"
    if ! (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null); then
        echo "test-deps: npm ci failed in $node_dir; the Node receiver's test will skip" >&2
    fi
fi
exit 0
