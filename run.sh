#!/usr/bin/env bash
# seatbelt from a checkout: creates .venv/ on first use and reuses it. Every command but
# test, bench and lint is the `seatbelt` command (seatbelt/cli/main.py), run from .venv/.
#
#   ./run.sh [mitmdump args]      proxy with seatbelt built in (= seatbelt run)
#   ./run.sh web [mitmweb args]   the same under mitmweb
#   ./run.sh report|admin|hash|check|demo ...   see ./run.sh --help
#   ./run.sh test [pytest args]   whole suite; e2e tests again against the other mitmproxy major
#   ./run.sh bench [args]         benchmarks
#   ./run.sh lint                 ruff
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
    # pip's progress is shown (the first build takes a while) minus what repeats on every
    # reinstall and this machine's "local index location missing" noise.
    local pip_noise="^WARNING: Location 'file:|^Requirement already satisfied|^Looking in"
    pip_noise+="|^  (Stored in|Created wheel)"
    log "installing seatbelt and its dependencies (pip)"
    if ! "$dir/bin/python" -m pip install --progress-bar off --disable-pip-version-check "$@" 2>&1 \
        | { grep -v -E "$pip_noise" || true; } >&2; then
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
    make_env "$compat" "$python" "$(pyproject_hash) compat $want" -e "$root[redis,exact]" "$want"
    exec 9>&-
    printf '%s\n' "$compat"
}

# True when the pytest arguments select the whole suite (none, or only --durations): then the
# main pass is split as run_tests says; any other selection runs as given, in one pytest.
whole_suite() {
    local arg
    for arg in "$@"; do
        case "$arg" in --durations=*) ;; *) return 1 ;; esac
    done
    return 0
}

run_tests() {
    ensure_main
    local compat_dir rc=0 rc2=0
    compat_dir=$( [ -n "${SEATBELT_NO_COMPAT:-}" ] || ensure_compat )

    log "main pass: $(describe_env "$venv") ($venv)"
    if whole_suite "$@"; then
        # The whole suite: the tests that start no mitmdump on every core (by file: a file's
        # fixtures stay in one worker), then the e2e ones one at a time (they share network
        # namespaces, container names and timing).
        "$venv/bin/python" -m pytest -m "not e2e" -n auto --dist loadfile "$@" || rc=$?
        "$venv/bin/python" -m pytest -m e2e "$@" || rc=$(( rc ? rc : $? ))
    else
        "$venv/bin/python" -m pytest "$@" || rc=$?
    fi
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

seatbelt() { exec "$venv/bin/python" -m seatbelt.cli.main "$@"; }

cmd=${1:-}
case "$cmd" in
    test)
        shift
        run_tests "$@"
        ;;
    bench)
        shift
        ensure_main
        exec "$venv/bin/python" -m bench "$@"
        ;;
    lint)
        shift
        ensure_main
        exec "$venv/bin/ruff" check "${@:-.}"
        ;;
    help|-h|--help)
        ensure_main
        "$venv/bin/python" -m seatbelt.cli.main --help
        printf '\n./run.sh only (from a checkout):\n'
        printf '  test [pytest args]      whole suite, e2e tests also under the other mitmproxy major\n'
        printf '  bench [args]            benchmarks\n  lint                    ruff\n'
        ;;
    check)
        [ $# -eq 2 ] || die "usage: ./run.sh check POLICY"
        policy=$2
        case "$policy" in /*) ;; *) policy=$caller_pwd/$policy ;; esac
        ensure_main
        seatbelt check "$policy"
        ;;
    ""|-*|run|web|report|admin|hash|demo)
        ensure_main
        seatbelt "$@"
        ;;
    *)
        die "unknown command '$cmd'; fix: one of run, web, report, admin, hash, check, demo, test, bench, lint (./run.sh --help)"
        ;;
esac
