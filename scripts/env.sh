# Sourced by the project's scripts: one target directory, outside the clone, shared by every
# command (run, test, bench), so that Burn's expensive dependency build happens once per machine.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/stpn-target}"
