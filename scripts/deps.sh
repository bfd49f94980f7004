#!/usr/bin/env bash
# Installs everything the project needs on Debian 12 (apt packages, the nightly's rust-src,
# bpf-linker built against the nightly's LLVM, cargo-fuzz). Same as `cargo xtask setup`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo xtask setup
