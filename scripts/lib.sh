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
