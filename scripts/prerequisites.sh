#!/usr/bin/env bash
# Checks the tools a make target needs before it starts, and names every one that is missing or too
# old in one message, with the minimum version (see the Quick start in README.md).
#
#   scripts/prerequisites.sh "make test" python rust node go redis
#
# The minimums come from the files that impose them (pyproject.toml, rust/Cargo.toml,
# clients/typescript/package.json, the go.mod files), so they cannot drift from the code.
# Exit status: 0 when everything is there, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."

target=$1
shift
PYTHON=${PYTHON:-python3}
problems=()

# The version in `text` (first dotted number), or "" when there is none.
version_in() { grep -oE '[0-9]+(\.[0-9]+)+' <<<"$1" | head -n1; }
# True when version $1 >= version $2.
at_least() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }
go_minimum() { sed -n 's/^go \([0-9.]*\).*/\1/p' "$1"; }

# need LABEL MINIMUM HOW-TO-GET PROGRAM COMMAND... : PROGRAM must be on PATH; COMMAND prints its version.
need() {
  local label=$1 minimum=$2 hint=$3 program=$4
  shift 4
  local out found
  if ! command -v "$program" >/dev/null 2>&1; then
    problems+=("$label >= $minimum: \`$program\` not found on PATH ($hint)")
    return
  fi
  out=$("$@" 2>&1) || { problems+=("$label >= $minimum: \`$*\` failed: ${out:0:200} ($hint)"); return; }
  found=$(version_in "$out")
  if [ -z "$found" ] || ! at_least "$found" "$minimum"; then
    problems+=("$label >= $minimum: found ${found:-an unknown version} ($hint)")
  fi
}

# works LABEL HOW-TO-GET COMMAND... : COMMAND must succeed (tools whose versions follow another's).
works() {
  local label=$1 hint=$2
  shift 2
  "$@" >/dev/null 2>&1 || problems+=("$label: \`$*\` does not work ($hint)")
}

for tool in "$@"; do
  case $tool in
    python)
      minimum=$(sed -n 's/^requires-python = ">=\([0-9.]*\)".*/\1/p' pyproject.toml)
      need "Python (\$PYTHON=$PYTHON)" "$minimum" "e.g. apt-get install python3 python3-venv" \
        "$PYTHON" "$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])'
      if command -v "$PYTHON" >/dev/null 2>&1 && ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
        problems+=("Python's venv module with ensurepip (make creates .venv with it): apt-get install python3-venv")
      fi
      ;;
    rust)
      minimum=$(sed -n 's/^rust-version = "\([0-9.]*\)".*/\1/p' rust/Cargo.toml)
      need "Rust (rustc)" "$minimum" "https://rustup.rs, then \`rustup update\`" rustc rustc --version
      need "Rust (cargo)" "$minimum" "https://rustup.rs" cargo cargo --version
      command -v cc >/dev/null 2>&1 || problems+=("a C compiler and linker, \`cc\` (Rust links with it): apt-get install build-essential")
      ;;
    rust-lint)
      works "rustfmt, with the Rust toolchain" "rustup component add rustfmt" cargo fmt --version
      works "clippy, with the Rust toolchain" "rustup component add clippy" cargo clippy --version
      ;;
    node)
      minimum=$(sed -n 's/.*"node": ">=\([0-9.]*\)".*/\1/p' clients/typescript/package.json)
      need "Node.js" "$minimum" "https://nodejs.org or apt-get install nodejs npm" node node --version
      need "npm (with Node.js)" "7" "it comes with Node.js; on Debian apt-get install npm" npm npm --version
      ;;
    go | go-all)  # go-all: also benches/soak/rig (make lint vets it, make soak runs it)
      minimum=$(go_minimum clients/go/go.mod)
      if [ "$tool" = go-all ]; then
        rig=$(go_minimum benches/soak/rig/go.mod)
        at_least "$minimum" "$rig" || minimum=$rig
      fi
      # GOTOOLCHAIN=local: report the installed Go, not one `go` would download to satisfy a go.mod.
      need "Go" "$minimum" "https://go.dev/doc/install" go env GOTOOLCHAIN=local go version
      ;;
    redis)
      need "redis-server (Redis)" "7.0" "apt-get install redis-server" redis-server redis-server --version
      ;;
    chromium)  # the dashboard's browser tests drive Debian's Chromium
      works "Chromium (\`chromium\`)" "apt-get install chromium" chromium --version
      ;;
    curl)  # the Quick start's curl line is run by the tests
      works "curl" "apt-get install curl" curl --version
      ;;
    *)
      echo "prerequisites.sh: unknown tool $tool" >&2
      exit 2
      ;;
  esac
done

if [ ${#problems[@]} -gt 0 ]; then
  {
    echo "$target cannot run: this machine lacks"
    printf '  - %s\n' "${problems[@]}"
    echo "Every prerequisite is listed in the Quick start of README.md."
  } >&2
  exit 1
fi
