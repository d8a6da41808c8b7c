# Sourced by the project's scripts: one target directory, outside the clone, shared by every
# command (run, test, bench), so that Burn's expensive dependency build happens once per machine.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/stpn-target}"

# MuJoCo installed by scripts/setup-mujoco without root lives here; with root it is in /usr/local.
if [ -d "$HOME/.local/stpn-engines/mujoco/lib" ]; then
  export PKG_CONFIG_PATH="$HOME/.local/stpn-engines/mujoco/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  export LD_LIBRARY_PATH="$HOME/.local/stpn-engines/mujoco/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
# The feature set of every build the scripts make (one set, so that builds share artifacts).
# `atari` links ALE (GPL-2.0-only): binaries built by these scripts are GPL-2.0; build without it
# (cargo build -p stpn-bench --features mujoco) for a binary under the project's own licence.
export STPN_FEATURES="stpn-bench/mujoco,stpn-bench/atari"
