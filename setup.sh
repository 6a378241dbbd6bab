# zkynet setup. Run it as
#     source setup.sh     (sets up and activates the project's virtualenv in this shell)
# or  bash setup.sh       (sets up only; then `source .venv/bin/activate`)
#
# First run: creates .venv next to this file, installs zkynet (editable) with the
# runner's and the tests' extras (`.[experiments,test]`; the library alone needs only
# jax, numpy and graphviz), the Graphviz `dot` program if it is missing and we may
# (root), and Chromium for the browser test of the MLflow UI (root; ZKYNET_NO_BROWSER=1 skips it).
# Later runs only activate, unless pyproject.toml changed. Set ZKYNET_PYTHON to
# choose the interpreter (default: python3). Every failure says what to do.

_zkynet_script="${BASH_SOURCE[0]:-$0}"  # bash, or zsh (where $0 is the sourced file)

_zkynet_setup() {
    local root venv python stamp want
    root="$(cd "$(dirname "$_zkynet_script")" && pwd)" || return 1
    venv="$root/.venv"
    python="${ZKYNET_PYTHON:-python3}"

    _zkynet_fail() { echo "setup.sh: error: $*" >&2; return 1; }

    if [ ! -x "$venv/bin/python" ]; then
        command -v "$python" >/dev/null 2>&1 ||
            { _zkynet_fail "'$python' not found; install Python >= 3.10 or set ZKYNET_PYTHON"; return 1; }
        "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
            { _zkynet_fail "zkynet needs Python >= 3.10; '$python' is $("$python" -V 2>&1)"; return 1; }
        echo "setup.sh: creating virtualenv $venv"
        "$python" -m venv "$venv" ||
            { _zkynet_fail "could not create $venv (Debian/Ubuntu: apt-get install python3-venv)"; return 1; }
    fi

    stamp="$venv/.zkynet-installed"
    want="$(cat "$root/pyproject.toml" "$root/setup.sh" | cksum)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        echo "setup.sh: installing zkynet and its dependencies into $venv (a few minutes the first time)"
        log="$venv/pip-install.log"
        { "$venv/bin/python" -m pip install --disable-pip-version-check --upgrade pip &&
            "$venv/bin/python" -m pip install --disable-pip-version-check -e "$root[experiments,test]"; } > "$log" 2>&1 ||
            { tail -n 25 "$log" >&2
              _zkynet_fail "pip install failed (the end of its output is above; all of it: $log)"; return 1; }
        echo "$want" > "$stamp"
    fi

    if ! command -v dot >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "setup.sh: installing Graphviz (dot) with apt-get"
            { DEBIAN_FRONTEND=noninteractive apt-get install -y -q graphviz >/dev/null 2>&1 ||
              { apt-get update -q >/dev/null 2>&1 &&
                DEBIAN_FRONTEND=noninteractive apt-get install -y -q graphviz >/dev/null; }; } ||
                { _zkynet_fail "apt-get could not install graphviz; try: apt-get update && apt-get install graphviz"; return 1; }
        else
            _zkynet_fail "Graphviz's 'dot' program is missing (zkynet.visual.plot_cg needs it). Install it:
    Debian/Ubuntu: sudo apt-get install graphviz
    macOS:         brew install graphviz
    conda:         conda install -c conda-forge graphviz
then run setup.sh again."
            return 1
        fi
    fi

    if ! command -v chromium >/dev/null 2>&1 && [ -z "${ZKYNET_NO_BROWSER:-}" ] &&
            [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup.sh: installing Chromium with apt-get (the tests open the MLflow UI in it; ZKYNET_NO_BROWSER=1 skips this)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 ||
            echo "setup.sh: warning: could not install chromium; the MLflow UI test will be skipped" >&2
    fi

    echo "setup.sh: ready ($("$venv/bin/python" -V), zkynet in $venv)"
    # shellcheck disable=SC1091
    . "$venv/bin/activate"
}

if [ "$_zkynet_script" != "$0" ] || case "${ZSH_EVAL_CONTEXT:-}" in *file*) true;; *) false;; esac; then
    _zkynet_setup  # sourced: the caller's shell keeps the activated virtualenv
    _zkynet_status=$?
    unset -f _zkynet_setup _zkynet_fail; unset _zkynet_script
    return $_zkynet_status
else
    _zkynet_setup && echo "setup.sh: run 'source .venv/bin/activate' (or 'source setup.sh') to use it"
    exit $?
fi
