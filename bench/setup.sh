#!/bin/sh
# The bench's receiver: nginx from Debian's packages (nginx-light), when it can be had.
# A no-op when nginx is already installed. Without root or apt-get it only says so:
# the bench then falls back to a multi-process aiohttp receiver and prints which it used.
set -eu

if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "bench/setup.sh: nginx is missing and this is not a root Debian shell;" \
        "the bench will use its aiohttp receiver" >&2
    exit 0
fi
echo "bench/setup.sh: installing nginx-light (Debian) for the bench's receiver" >&2
# The package must not start a system nginx on port 80: the bench runs its own,
# with its own config, on a port it picked. Without a policy-rc.d that says so,
# runlevel 1 keeps invoke-rc.d from starting the service.
if [ ! -x /usr/sbin/policy-rc.d ]; then
    export RUNLEVEL=1
fi
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q --no-install-recommends nginx-light >/dev/null; then
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends nginx-light >/dev/null || {
        echo "bench/setup.sh: could not install nginx-light;" \
            "the bench will use its aiohttp receiver" >&2
        exit 0
    }
fi
