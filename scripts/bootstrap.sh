#!/usr/bin/env bash
# Prepare this checkout for `scripts/demo` and `scripts/test`. Safe to run again and again: every step
# checks first and does nothing when it is already done, so a rerun takes a fraction of a second.
#
#   1. System packages the tests and the demo use (graphviz, redis-server, postgresql, chromium):
#      installed with apt-get only when one is missing; `apt-get update` runs only when needed.
#   2. A virtualenv in .venv made with Python 3.11 or newer.
#   3. `pip install -e ".[all,test]"` into it, again only when pyproject.toml changed since the last
#      successful install (a hash of it is kept in .venv/.avtomatika-bootstrap).
#
# Usage: scripts/bootstrap.sh [--no-apt] [--force] [--verbose]
#   --no-apt    leave system packages alone (also AVTOMATIKA_NO_APT=1)
#   --force     reinstall the Python packages even if pyproject.toml did not change
#   --verbose   show the output of apt-get and pip (also AVTOMATIKA_VERBOSE=1)
# Environment: AVTOMATIKA_PYTHON=/path/to/python3.x picks the interpreter the venv is made from.
#
# Quiet on a no-op; one line per step that does real work; the tail of the failing tool's log on error.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.avtomatika-bootstrap"
PIP_TARGET=".[all,test]"
MIN_PY=(3 11)

no_apt="${AVTOMATIKA_NO_APT:-0}"
verbose="${AVTOMATIKA_VERBOSE:-0}"
force=0

say() { printf 'bootstrap: %s\n' "$*" >&2; }
die() { printf 'bootstrap: error: %s\n' "$*" >&2; exit 1; }

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

while (($#)); do
    case "$1" in
        --no-apt) no_apt=1 ;;
        --force) force=1 ;;
        -v | --verbose) verbose=1 ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
done

# Two bootstraps at once (say `make demo` and `make test` in two terminals) would race on apt and pip:
# hold a lock on this very file, so no lock file litters the checkout.
if command -v flock >/dev/null 2>&1; then
    exec 9<"${BASH_SOURCE[0]}"
    flock 9
fi

# Run a noisy command; its output goes to a log that is shown only when it fails (or with --verbose).
LOG="$(mktemp "${TMPDIR:-/tmp}/avtomatika-bootstrap.XXXXXX")"
trap 'rm -f "$LOG"' EXIT
quietly() {
    if [[ $verbose == 1 ]]; then
        "$@" 2>&1 | tee "$LOG" >&2
    else
        "$@" >"$LOG" 2>&1
    fi
}
show_log() {
    printf -- '---- last lines of: %s ----\n' "$*" >&2
    tail -n 40 "$LOG" >&2
    printf -- '----\n' >&2
}

# ---------------------------------------------------------------------------------------------------
# Python: find an interpreter >= 3.11 (only needed when the venv must be created).

py_ok() { "$1" -c "import sys; sys.exit(sys.version_info[:2] < (${MIN_PY[0]}, ${MIN_PY[1]}))" 2>/dev/null; }

find_python() {
    local cand
    if [[ -n ${AVTOMATIKA_PYTHON:-} ]]; then
        py_ok "$AVTOMATIKA_PYTHON" || die "AVTOMATIKA_PYTHON=$AVTOMATIKA_PYTHON is not Python >= ${MIN_PY[0]}.${MIN_PY[1]}"
        command -v "$AVTOMATIKA_PYTHON"
        return
    fi
    for cand in python3 python3.14 python3.13 python3.12 python3.11; do
        if command -v "$cand" >/dev/null 2>&1 && py_ok "$cand"; then
            command -v "$cand"
            return
        fi
    done
    local found="none"
    command -v python3 >/dev/null 2>&1 && found="$(python3 -V 2>&1)"
    die "Python >= ${MIN_PY[0]}.${MIN_PY[1]} is required (python3 on PATH: $found).
  Install it (Debian 12 and Ubuntu 24.04 ship 3.11+ as python3) or point AVTOMATIKA_PYTHON at one."
}

venv_ok() { [[ -x $VENV/bin/python ]] && py_ok "$VENV/bin/python"; }

PYTHON=""
if ! venv_ok; then
    PYTHON="$(find_python)"
fi

# ---------------------------------------------------------------------------------------------------
# System packages.

missing_packages() {
    command -v dot >/dev/null 2>&1 || echo graphviz
    command -v redis-server >/dev/null 2>&1 || echo redis-server
    # Debian keeps initdb/pg_ctl off PATH, under /usr/lib/postgresql/<version>/bin.
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null 2>&1 ||
        echo postgresql
    if [[ -z ${CHROMIUM_PATH:-} || ! -x ${CHROMIUM_PATH:-} ]]; then
        command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || echo chromium
    fi
    # Debian's python3 comes without ensurepip; `python3 -m venv` needs the pythonX.Y-venv package.
    if [[ -n $PYTHON ]] && ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
        local ver
        ver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
        if [[ $PYTHON == /usr/bin/* ]] && apt-cache show "python$ver-venv" >/dev/null 2>&1; then
            echo "python$ver-venv"
        else
            echo python3-venv
        fi
    fi
}

apt_lists_present() { compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; }

install_packages() {
    local -a sudo=() pkgs=("$@")
    if [[ $(id -u) -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
            sudo=(sudo -n)
        else
            say "warning: not root, so not installing missing system packages: ${pkgs[*]}"
            say "  install them yourself: sudo apt-get install ${pkgs[*]}"
            say "  (tests that need them will fail or skip; --no-apt / AVTOMATIKA_NO_APT=1 silences this)"
            return 0
        fi
    fi
    local -a apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y
        -o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0)
    say "installing system packages: ${pkgs[*]} (a minute or so)"
    # Try the package lists already on the machine first; refresh them (once) only when there are none
    # or when they are stale enough that the install fails.
    if apt_lists_present && quietly "${apt[@]}" install "${pkgs[@]}"; then
        return 0
    fi
    if ! quietly "${apt[@]}" update; then
        show_log "apt-get update"
        die "apt-get update failed (no network to the Debian mirror?); rerun with --no-apt to skip"
    fi
    if ! quietly "${apt[@]}" install "${pkgs[@]}"; then
        show_log "apt-get install ${pkgs[*]}"
        die "could not install ${pkgs[*]}; install them yourself, then rerun with --no-apt"
    fi
}

if [[ $no_apt != 1 ]]; then
    mapfile -t missing < <(missing_packages)
    if ((${#missing[@]})); then
        if command -v apt-get >/dev/null 2>&1; then
            install_packages "${missing[@]}"
        else
            say "warning: no apt-get here; install these yourself: ${missing[*]} (or pass --no-apt)"
        fi
    fi
fi

# ---------------------------------------------------------------------------------------------------
# Virtualenv.

if ! venv_ok; then
    if [[ -e $VENV ]]; then
        say "recreating $VENV (its python is missing, broken or older than ${MIN_PY[0]}.${MIN_PY[1]})"
    else
        say "creating $VENV with $("$PYTHON" -V 2>&1)"
    fi
    if ! quietly "$PYTHON" -m venv --clear "$VENV"; then
        show_log "$PYTHON -m venv $VENV"
        die "could not create the virtualenv; on Debian/Ubuntu: apt-get install python3-venv"
    fi
fi

# ---------------------------------------------------------------------------------------------------
# Python packages: reinstall only when pyproject.toml (or what we install from it) changed.

[[ -f $ROOT/pyproject.toml ]] || die "no pyproject.toml in $ROOT"
wanted="$({
    cat "$ROOT/pyproject.toml"
    echo "pip install -e $PIP_TARGET"
} | sha256sum | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
# The stamp alone could lie if someone ran `pip uninstall avtomatika`: also look for the metadata.
installed=0
compgen -G "$VENV/lib/python3*/site-packages/avtomatika-*.dist-info" >/dev/null && installed=1

if [[ $force == 1 || $wanted != "$have" || $installed == 0 ]]; then
    say "installing Python packages: pip install -e \"$PIP_TARGET\""
    if ! (cd "$ROOT" && PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
        quietly "$VENV/bin/python" -m pip install -e "$PIP_TARGET"); then
        rm -f "$STAMP"
        show_log "pip install -e $PIP_TARGET"
        die "pip install failed (see above)"
    fi
    printf '%s\n' "$wanted" >"$STAMP"
fi
