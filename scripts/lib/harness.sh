# Helpers shared by the test scripts: install what is missing, start private servers on free
# loopback ports, and stop them when the script exits. Sourced, not run.

HARNESS_DIR="$(mktemp -d -t channel-test.XXXXXX)"
HARNESS_CLEANUP=()
harness_cleanup() {
    local i
    for ((i = ${#HARNESS_CLEANUP[@]} - 1; i >= 0; i--)); do
        eval "${HARNESS_CLEANUP[$i]}" >/dev/null 2>&1 || true
    done
    rm -rf "$HARNESS_DIR"
}
trap harness_cleanup EXIT

as_root() {
    if [[ "$(id -u)" == 0 ]]; then "$@"; else sudo "$@"; fi
}

APT_UPDATED=0
apt_install() {
    if [[ "$APT_UPDATED" == 0 ]]; then
        as_root apt-get update -qq
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@"
}

need_rust() {
    command -v cargo >/dev/null || {
        echo "cargo is missing: install the Rust toolchain (rustup) first" >&2
        exit 1
    }
}

# A TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
    python3 - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

pg_bindir() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x "$d/initdb" && -x "$d/pg_ctl" ]] && { echo "$d"; return 0; }
    done
    return 1
}

# Starts a private PostgreSQL (Debian's packages, installed when missing) in a temporary
# directory on a free loopback port and exports TEST_DATABASE_URL for it.
start_private_postgres() {
    local bindir port data run_as=()
    bindir="$(pg_bindir)" || { apt_install postgresql >/dev/null; bindir="$(pg_bindir)"; }
    port="$(free_port)"
    data="$HARNESS_DIR/pg"
    mkdir -p "$data"
    if [[ "$(id -u)" == 0 ]]; then
        # initdb and postgres refuse to run as root.
        id postgres >/dev/null 2>&1 || as_root useradd --system --no-create-home postgres
        chown -R postgres "$HARNESS_DIR"
        chmod 755 "$HARNESS_DIR"
        run_as=(runuser -u postgres --)
    fi
    "${run_as[@]}" "$bindir/initdb" -D "$data/db" -U postgres -A trust --no-sync >"$data/initdb.log" 2>&1 || {
        cat "$data/initdb.log" >&2; return 1; }
    "${run_as[@]}" "$bindir/pg_ctl" -D "$data/db" -l "$data/server.log" -w -t 60 \
        -o "-h 127.0.0.1 -p $port -k $data -c fsync=off -c max_connections=200" start >/dev/null || {
        cat "$data/server.log" >&2; return 1; }
    HARNESS_CLEANUP+=("${run_as[*]} $bindir/pg_ctl -D $data/db -m immediate stop")
    TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
    export TEST_DATABASE_URL
    echo "private PostgreSQL on 127.0.0.1:$port"
}
