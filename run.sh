#!/usr/bin/env bash
# seatbelt's one entry point (contract section 1). Creates .venv/ on first use and reuses it.
#
#   ./run.sh [mitmdump args]      proxy with the addon (policies/default.yaml, state/ ledger)
#   ./run.sh web [mitmweb args]   the same under mitmweb
#   ./run.sh test [pytest args]   whole suite; e2e tests again against the other mitmproxy major
#   ./run.sh report [--json ...]  spend report
#   ./run.sh demo                 stand-in LLM API + proxy + real SDK traffic, offline
#   ./run.sh bench [args]         benchmarks
#   ./run.sh hash                 fingerprint of a credential read from stdin (never echoed)
#   ./run.sh check POLICY         validate a policy file: OK or one line saying what to fix
#   ./run.sh admin ACTION ...     audited operator actions: reset, topup, holds, release
#   ./run.sh lint                 ruff
#   ./run.sh help                 this text
#
# SEATBELT_PYTHON=/path/to/python forces the interpreter of .venv/ (when it is first created).
# SEATBELT_NO_COMPAT=1 skips the second (other mitmproxy) e2e pass of `./run.sh test`.
set -euo pipefail

caller_pwd=$PWD
cd -P "$(dirname "${BASH_SOURCE[0]}")"
root=$PWD
venv=$root/.venv
compat=$root/.venv-compat

log() { printf 'run.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# Prints "MAJOR MINOR" of a working interpreter, or fails (pyenv shims of inactive versions
# exist but exit 127, so every candidate is really run).
py_version() {
    "$1" -c 'import sys, venv, ensurepip; print(*sys.version_info[:2])' 2>/dev/null
}

# The real interpreter behind a candidate (not a pyenv shim that may change meaning later).
py_real() { "$1" -c 'import sys; print(sys.executable)'; }

# The newest Python >= 3.12 found (python3.13, python3.12, pyenv's 3.12/3.13), else 3.11/python3.
pick_python() {
    local best="" best_minor=0 c v
    local pyenv_root=${PYENV_ROOT:-$HOME/.pyenv}
    for c in python3.13 python3.12 "$pyenv_root"/versions/3.1[23]*/bin/python3; do
        v=$(py_version "$c") || continue
        set -- $v
        if [ "$1" -eq 3 ] && [ "$2" -ge 12 ] && [ "$2" -gt "$best_minor" ]; then
            best=$c best_minor=$2
        fi
    done
    if [ -z "$best" ]; then
        for c in python3.11 "$pyenv_root"/versions/3.11*/bin/python3 python3; do
            v=$(py_version "$c") || continue
            set -- $v
            if [ "$1" -eq 3 ] && [ "$2" -ge 11 ]; then best=$c; break; fi
        done
    fi
    [ -n "$best" ] || return 1
    py_real "$best"
}

# A Python 3.11 interpreter (what mitmproxy 11.0.2 is tested on), if any.
pick_python311() {
    local c v pyenv_root=${PYENV_ROOT:-$HOME/.pyenv}
    for c in python3.11 "$pyenv_root"/versions/3.11*/bin/python3 /usr/bin/python3.11; do
        v=$(py_version "$c") || continue
        if [ "$v" = "3 11" ]; then py_real "$c"; return 0; fi
    done
    return 1
}

# make_env DIR PYTHON STAMP PIP-ARGS...: create/refresh a venv; reinstall when STAMP changes.
make_env() {
    local dir=$1 python=$2 stamp=$3 start
    shift 3
    if [ -f "$dir/.seatbelt-stamp" ] && [ "$(cat "$dir/.seatbelt-stamp")" = "$stamp" ] \
        && "$dir/bin/python" -c '' 2>/dev/null; then
        return 0
    fi
    start=$SECONDS
    if ! "$dir/bin/python" -c '' 2>/dev/null; then
        rm -rf "$dir"
        log "creating ${dir#"$root"/} with $python ($("$python" -V 2>&1))"
        "$python" -m venv "$dir" || { rm -rf "$dir"; die "cannot create $dir with $python"; }
    else
        log "pyproject.toml changed: reinstalling into ${dir#"$root"/}"
    fi
    rm -f "$dir/.seatbelt-stamp"
    # pip -q still shows errors; drop only this machine's "local index location missing" noise.
    if ! "$dir/bin/python" -m pip install -q --disable-pip-version-check "$@" 2>&1 \
        | { grep -v "^WARNING: Location 'file:" || true; } >&2; then
        die "pip install into $dir failed (see above); fix it and run again"
    fi
    printf '%s\n' "$stamp" >"$dir/.seatbelt-stamp"
    log "${dir#"$root"/} ready in $((SECONDS - start)) s"
}

pyproject_hash() { sha256sum "$root/pyproject.toml" | cut -d' ' -f1; }

mitm_major() { "$1/bin/python" -c 'from mitmproxy.version import VERSION; print(VERSION.split(".")[0])'; }

describe_env() {
    "$1/bin/python" -c 'import platform; from mitmproxy.version import VERSION
print(f"Python {platform.python_version()}, mitmproxy {VERSION}")'
}

ensure_main() {
    exec 9>"$root/.venv.lock"
    flock 9 2>/dev/null || true  # two first runs at once must not build one venv twice
    local python=""  # only needed when the venv must be created
    if ! "$venv/bin/python" -c '' 2>/dev/null; then
        python=${SEATBELT_PYTHON:-}
        [ -n "$python" ] || python=$(pick_python) \
            || die "no Python >= 3.11 found; install python3.12 (or 3.11) and run again"
    fi
    make_env "$venv" "$python" "$(pyproject_hash) dev" -e "$root[dev]"
    exec 9>&-
}

# The other mitmproxy major for the e2e pass: 11.0.2 on Python 3.11 when main runs 12,
# 12 on a Python >= 3.12 when main runs 11. Prints the env dir, or nothing if impossible.
ensure_compat() {
    local major python want
    major=$(mitm_major "$venv")
    if [ "$major" -ge 12 ]; then
        python=$(pick_python311) || { log "compat pass skipped: no Python 3.11 found"; return 0; }
        want="mitmproxy==11.0.2"
    else
        python=$(pick_python) || true
        if [ -z "$python" ] || [ "$(py_version "$python")" = "3 11" ]; then
            log "compat pass skipped: no Python >= 3.12 found for mitmproxy 12"
            return 0
        fi
        want="mitmproxy>=12,<13"
    fi
    exec 9>"$root/.venv.lock"
    flock 9 2>/dev/null || true
    make_env "$compat" "$python" "$(pyproject_hash) compat $want" -e "$root[redis]" "$want"
    exec 9>&-
    printf '%s\n' "$compat"
}

run_tests() {
    ensure_main
    local compat_dir rc=0 rc2=0
    compat_dir=$( [ -n "${SEATBELT_NO_COMPAT:-}" ] || ensure_compat )

    log "main pass: $(describe_env "$venv") ($venv)"
    "$venv/bin/python" -m pytest "$@" || rc=$?
    if [ -z "$compat_dir" ]; then
        return "$rc"
    fi
    log "compat pass (-m e2e): $(describe_env "$compat_dir") ($compat_dir/bin/mitmdump)"
    SEATBELT_MITMDUMP=$compat_dir/bin/mitmdump "$venv/bin/python" -m pytest -m e2e "$@" || rc2=$?
    if [ "$rc2" -eq 5 ]; then
        log "compat pass: no e2e tests collected"
        rc2=0
    fi
    log "main pass exit $rc, compat pass exit $rc2"
    [ "$rc" -eq 0 ] && [ "$rc2" -eq 0 ]
}

cmd=${1:-}
case "$cmd" in
    test)
        shift
        run_tests "$@"
        ;;
    web)
        shift
        ensure_main
        mkdir -p state
        # Show the Comment column, where seatbelt writes who spent what on every flow.
        columns=()
        for c in icon method status time comment path; do columns+=(--set "web_columns=$c"); done
        # Reading a file (-r/--rfile) beside a running proxy: no proxy listener, no metrics,
        # audit or shared ledger, a free web port; each only unless the user set it.
        case " $* " in *" -r "*|*" --rfile"*)
            for o in seatbelt_metrics= seatbelt_audit= seatbelt_ledger=memory:// server=false \
                "web_port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"; do
                case " $* " in *" ${o%%=*}="*|*" ${o%%=*} "*) ;; *) columns+=(--set "$o") ;; esac
            done ;;
        esac
        exec "$venv/bin/mitmweb" -s seatbelt/addon.py "${columns[@]}" "$@"
        ;;
    report)
        shift
        ensure_main
        exec "$venv/bin/python" -m seatbelt.cli.report "$@"
        ;;
    admin)
        shift
        ensure_main
        exec "$venv/bin/python" -m seatbelt.cli.admin "$@"
        ;;
    demo)
        shift
        ensure_main
        exec "$venv/bin/python" -m tests.standin.demo "$@"
        ;;
    bench)
        shift
        ensure_main
        exec "$venv/bin/python" -m bench "$@"
        ;;
    hash)
        ensure_main
        if [ -t 0 ]; then
            IFS= read -rs -p "credential (not echoed): " credential
            printf '\n' >&2
            printf '%s' "$credential" | "$venv/bin/python" -m seatbelt.config.policy hash
        else
            exec "$venv/bin/python" -m seatbelt.config.policy hash
        fi
        ;;
    check)
        [ $# -eq 2 ] || die "usage: ./run.sh check POLICY"
        policy=$2
        case "$policy" in /*) ;; *) policy=$caller_pwd/$policy ;; esac
        ensure_main
        exec "$venv/bin/python" -m seatbelt.config.policy check "$policy"
        ;;
    lint)
        shift
        ensure_main
        exec "$venv/bin/ruff" check "${@:-.}"
        ;;
    help)
        sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
        ;;
    *)
        ensure_main
        mkdir -p state
        exec "$venv/bin/mitmdump" -s seatbelt/addon.py "$@"
        ;;
esac
