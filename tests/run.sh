#!/usr/bin/env bash
# Runs every ami test on a fresh machine. Installs what is missing first:
#   - Debian packages: socat (virtual serial pairs for RTU-over-pty tests)
#   - a Python venv in .venv with pymodbus 3.16.1 (the independent Modbus peer) and gurux-dlms 1.0.203 (the
#     independent DLMS/COSEM client)
#   - the spodes-rs 0.7.1 example HDLC server (an independent DLMS meter, GPL, a test tool only: built with
#     cargo install into .tools/spodes, never linked into ami)
# then builds the workspace and runs the unit, integration and peer tests with cargo-nextest
# (cargo test when nextest is missing), and validates the shipped device profiles.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

say() { printf '\n== %s\n' "$*"; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=()
command -v socat >/dev/null 2>&1 || need_apt+=(socat)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v pg_isready >/dev/null 2>&1 || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
    say "installing Debian packages: ${need_apt[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# PostgreSQL on 127.0.0.1:5432 with trust auth and a database `test` (the central store's PG tests).
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    say "starting PostgreSQL"
    for v in $(ls /etc/postgresql 2>/dev/null); do
        as_root pg_ctlcluster --skip-systemctl-redirect "$v" main start || true
    done
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" 2>/dev/null | grep -q 1 \
        || psql -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE test" >/dev/null 2>&1 || true
fi
export AMI_TEST_POSTGRES="${AMI_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}"

if ! "$root/.venv/bin/python" - 2>/dev/null <<'PY'
import sys
from importlib.metadata import version
import pymodbus, serial, gurux_dlms
sys.exit(not (version("pymodbus") == "3.16.1" and version("gurux-dlms") == "1.0.203"))
PY
then
    say "creating .venv with pymodbus 3.16.1 and gurux-dlms 1.0.203"
    python3 -m venv "$root/.venv"
    "$root/.venv/bin/pip" install -q --disable-pip-version-check pymodbus==3.16.1 pyserial==3.5 gurux-dlms==1.0.203
fi
export AMI_PYTHON="$root/.venv/bin/python"
export AMI_REPO="$root"

spodes="$root/.tools/spodes/bin/hdlc_tcp_server"
if [ ! -x "$spodes" ]; then
    say "building the spodes-rs 0.7.1 example HDLC server into .tools/spodes"
    cargo install -q --locked spodes-rs --version 0.7.1 --example hdlc_tcp_server --root "$root/.tools/spodes"
fi
export AMI_SPODES_SERVER="$spodes"

say "building"
cargo build --workspace --all-targets --locked

say "checking the shipped device profiles"
cargo run -q --locked --bin amid -- profiles check devices/*.xml

say "running the tests"
cargo test --workspace --doc --locked -q
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi
