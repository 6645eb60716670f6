# Shared by the scripts: what a fresh machine needs installed.

# The playbooks build for wasm32-wasip2; rustup installs the target.
ensure_wasm_target() {
    if ! command -v rustup >/dev/null 2>&1; then
        echo "salve: rustup is required to install the wasm32-wasip2 target (https://rustup.rs)" >&2
        exit 1
    fi
    if ! rustup target list --installed | grep -qx wasm32-wasip2; then
        echo "==> installing the wasm32-wasip2 Rust target"
        rustup target add wasm32-wasip2
    fi
}

# Runs a command as root: directly when we are root, else with sudo.
sudo_if_needed() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# The nginx integration tests start Debian's nginx themselves, on loopback.
# Installed without starting the packaged service.
ensure_nginx() {
    if [ -x /usr/sbin/nginx ]; then return; fi
    echo "==> installing nginx (Debian's nginx-light) for the integration tests"
    # One root shell, under one sudo: the policy-rc.d guard that keeps the
    # package from starting nginx must be in place for the install and
    # removed after it, whatever happens. The script is a fixed literal.
    sudo_if_needed sh -c '
        set -e
        created=
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d
            chmod +x /usr/sbin/policy-rc.d
            created=1
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq nginx-light >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null; }
        [ -z "$created" ] || rm -f /usr/sbin/policy-rc.d
    '
}

# The evidence report's test loads it in a real browser: Debian's chromium,
# headless.
ensure_chromium() {
    if command -v chromium >/dev/null 2>&1; then return; fi
    echo "==> installing chromium (Debian's) for the evidence report's browser test"
    sudo_if_needed sh -c '
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 ||
            { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
    '
}
