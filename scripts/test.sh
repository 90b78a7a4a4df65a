#!/usr/bin/env bash
# Runs the whole mojaswitch test suite: makes sure MariaDB and Redis are
# installed and running on this machine, provisions a test database user,
# installs the SDK scheme adapter (scripts/install-sdk-adapter.sh; cached), and
# then runs `cargo test --workspace --release`.
#
# Usage:
#   bash scripts/test.sh                      # services + full test suite
#   bash scripts/test.sh --services-only      # services only (debugging)
#   bash scripts/test.sh -- ARGS...           # ARGS go to `cargo test`; a
#                                             # second `--` inside ARGS starts
#                                             # the test-binary arguments, e.g.
#   bash scripts/test.sh -- transfer -- --nocapture
#   bash scripts/test.sh -- -p switch-storage # one crate (drops --workspace)
#
# Works as root on a fresh Debian 12 (installs mariadb-server/redis-server via
# apt if missing) and on a machine where the services already run. Every wait
# is bounded. Tests get:
#   MOJASWITCH_TEST_MYSQL_URL  (default mysql://mojaswitch:mojaswitch@127.0.0.1:3306)
#   MOJASWITCH_TEST_REDIS_URL  (default redis://127.0.0.1:6379)
# Values already set in the environment are kept. After a full run (no ARGS)
# a 10-second benchmark per backend prints its figures (MOJASWITCH_CI_BENCH=0
# skips it); only its books check can fail the run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

export DEBIAN_FRONTEND=noninteractive

MYSQL_HOST=127.0.0.1
MYSQL_PORT=3306
REDIS_HOST=127.0.0.1
REDIS_PORT=6379
TEST_DB_USER=mojaswitch
TEST_DB_PASS=mojaswitch
WAIT_SECS=60

step() { printf '==> %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() {
    printf 'ERROR: %s\n' "$*" >&2
    exit 1
}

usage() {
    sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# --- arguments -------------------------------------------------------------
services_only=0
cargo_args=()
bin_args=()
while (($#)); do
    case "$1" in
        --services-only) services_only=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        --)
            shift
            seen_sep=0
            for a in "$@"; do
                if ((seen_sep == 0)) && [[ "$a" == "--" ]]; then
                    seen_sep=1
                elif ((seen_sep)); then
                    bin_args+=("$a")
                else
                    cargo_args+=("$a")
                fi
            done
            break
            ;;
        *)
            die "unknown argument '$1' (cargo test arguments go after --; see --help)"
            ;;
    esac
    shift
done

# --- helpers ---------------------------------------------------------------
# Runs a command as root (directly, or through passwordless sudo).
as_root() {
    if ((EUID == 0)); then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        die "need root (or passwordless sudo) to run: $*"
    fi
}

apt_updated=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install $* by hand"
    if ((apt_updated == 0)); then
        step "apt-get update"
        as_root apt-get update -qq </dev/null
        apt_updated=1
    fi
    step "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" </dev/null >/dev/null
}

# First of the given names that is an executable (PATH, then /usr/sbin, /usr/bin).
find_bin() {
    local name
    for name in "$@"; do
        if command -v "$name" >/dev/null 2>&1; then
            command -v "$name"
            return 0
        fi
        for dir in /usr/sbin /usr/bin /sbin; do
            if [[ -x "$dir/$name" ]]; then
                echo "$dir/$name"
                return 0
            fi
        done
    done
    return 1
}

# --- MariaDB ---------------------------------------------------------------
step "MariaDB: checking installation"
MYSQLD=$(find_bin mariadbd mysqld || true)
MYSQL_CLIENT=$(find_bin mariadb mysql || true)
MYSQL_ADMIN=$(find_bin mariadb-admin mysqladmin || true)
if [[ -z "$MYSQLD" || -z "$MYSQL_CLIENT" || -z "$MYSQL_ADMIN" ]]; then
    apt_install mariadb-server mariadb-client
    MYSQLD=$(find_bin mariadbd mysqld) || die "mariadbd not found after install"
    MYSQL_CLIENT=$(find_bin mariadb mysql) || die "mariadb client not found after install"
    MYSQL_ADMIN=$(find_bin mariadb-admin mysqladmin) || die "mariadb-admin not found after install"
fi

# mysqladmin ping exits 0 whenever a server answers, even with "access denied".
mysql_ping() {
    timeout 10 "$MYSQL_ADMIN" --protocol=tcp -h"$MYSQL_HOST" -P"$MYSQL_PORT" -uroot \
        --connect-timeout=2 ping </dev/null >/dev/null 2>&1
}

if mysql_ping; then
    step "MariaDB: already answering on $MYSQL_HOST:$MYSQL_PORT"
else
    step "MariaDB: starting $MYSQLD"
    as_root mkdir -p /run/mysqld
    as_root chown mysql:mysql /run/mysqld
    if [[ ! -d /var/log/mysql ]]; then
        as_root mkdir -p /var/log/mysql
        as_root chown mysql:adm /var/log/mysql 2>/dev/null || as_root chown mysql /var/log/mysql
    fi
    datadir=$(as_root "$(find_bin my_print_defaults || echo /bin/false)" --mysqld 2>/dev/null |
        sed -n 's/^--datadir=//p' | tail -n 1 || true)
    datadir=${datadir:-/var/lib/mysql}
    if ! as_root test -d "$datadir/mysql"; then
        step "MariaDB: initialising data directory $datadir"
        install_db=$(find_bin mariadb-install-db mysql_install_db) ||
            die "mariadb-install-db not found"
        as_root "$install_db" --user=mysql --datadir="$datadir" \
            >/var/log/mysql/ci-install-db.log 2>&1 </dev/null ||
            die "mariadb-install-db failed, see /var/log/mysql/ci-install-db.log"
    fi
    ssd_output=()
    if [[ "$(start-stop-daemon --help 2>&1 || true)" == *--output* ]]; then
        ssd_output=(--output /var/log/mysql/ci-mariadbd.log)
    fi
    # --user=mysql: Debian's stock config does not set it and mariadbd refuses
    # to run as root.
    as_root start-stop-daemon --start --oknodo --background "${ssd_output[@]}" \
        --exec "$MYSQLD" -- --user=mysql </dev/null >/dev/null
fi

step "MariaDB: waiting for ping (up to ${WAIT_SECS}s)"
deadline=$((SECONDS + WAIT_SECS))
until mysql_ping; do
    if ((SECONDS >= deadline)); then
        die "MariaDB did not answer on $MYSQL_HOST:$MYSQL_PORT within ${WAIT_SECS}s" \
            "(see /var/log/mysql/ for logs)"
    fi
    sleep 1
done

step "MariaDB: provisioning user '$TEST_DB_USER'"
provision_sql="
CREATE USER IF NOT EXISTS '$TEST_DB_USER'@'127.0.0.1' IDENTIFIED BY '$TEST_DB_PASS';
CREATE USER IF NOT EXISTS '$TEST_DB_USER'@'localhost' IDENTIFIED BY '$TEST_DB_PASS';
ALTER USER '$TEST_DB_USER'@'127.0.0.1' IDENTIFIED BY '$TEST_DB_PASS';
ALTER USER '$TEST_DB_USER'@'localhost' IDENTIFIED BY '$TEST_DB_PASS';
GRANT ALL PRIVILEGES ON *.* TO '$TEST_DB_USER'@'127.0.0.1', '$TEST_DB_USER'@'localhost';
FLUSH PRIVILEGES;"

# Root over TCP with an empty password (dev machines), else over the unix
# socket as the OS root user (unix_socket auth, fresh Debian install).
root_tcp() {
    timeout 30 "$MYSQL_CLIENT" --protocol=tcp -h"$MYSQL_HOST" -P"$MYSQL_PORT" -uroot \
        --connect-timeout=5 --batch "$@" </dev/null
}
root_socket() {
    as_root timeout 30 "$MYSQL_CLIENT" --protocol=socket -uroot \
        --connect-timeout=5 --batch "$@" </dev/null
}
test_user() {
    timeout 30 "$MYSQL_CLIENT" --protocol=tcp -h"$MYSQL_HOST" -P"$MYSQL_PORT" \
        -u"$TEST_DB_USER" -p"$TEST_DB_PASS" --connect-timeout=5 --batch "$@" </dev/null
}

if root_tcp -e "SELECT 1" >/dev/null 2>&1; then
    root_tcp -e "$provision_sql"
elif root_socket -e "SELECT 1" >/dev/null 2>&1; then
    root_socket -e "$provision_sql"
elif test_user -e "SELECT 1" >/dev/null 2>&1; then
    warn "cannot log in to MariaDB as root; using the existing '$TEST_DB_USER' user as is"
else
    die "cannot log in to MariaDB as root (TCP with empty password or unix socket)" \
        "and user '$TEST_DB_USER' does not work either"
fi

mysql_info=$(test_user -N -e "SELECT VERSION(), @@innodb_flush_log_at_trx_commit" 2>/dev/null) ||
    die "user '$TEST_DB_USER' cannot connect to $MYSQL_HOST:$MYSQL_PORT"
mysql_version=$(cut -f1 <<<"$mysql_info")
mysql_flush=$(cut -f2 <<<"$mysql_info")
if [[ "$mysql_flush" != "1" ]]; then
    # Not changed here: it is a server-wide setting owned by the machine.
    warn "MariaDB innodb_flush_log_at_trx_commit=$mysql_flush (not durable; 1 expected)"
fi

# --- Redis -----------------------------------------------------------------
step "Redis: checking installation"
REDIS_SERVER=$(find_bin redis-server || true)
REDIS_CLI=$(find_bin redis-cli || true)
if [[ -z "$REDIS_SERVER" || -z "$REDIS_CLI" ]]; then
    apt_install redis-server
    REDIS_SERVER=$(find_bin redis-server) || die "redis-server not found after install"
    REDIS_CLI=$(find_bin redis-cli) || die "redis-cli not found after install"
fi

redis_ping() {
    [[ "$(timeout 5 "$REDIS_CLI" -h "$REDIS_HOST" -p "$REDIS_PORT" ping </dev/null 2>/dev/null)" == "PONG" ]]
}

redis_wait() { # seconds
    local deadline=$((SECONDS + $1))
    until redis_ping; do
        ((SECONDS < deadline)) || return 1
        sleep 1
    done
}

redis_start() { # bind addresses...
    as_root "$REDIS_SERVER" --daemonize yes --bind "$@" --port "$REDIS_PORT" \
        --save "" --appendonly no --dir /var/lib/redis \
        --logfile /var/log/redis/ci.log </dev/null >/dev/null
}

if redis_ping; then
    step "Redis: already answering on $REDIS_HOST:$REDIS_PORT"
else
    step "Redis: starting $REDIS_SERVER"
    as_root mkdir -p /var/lib/redis /var/log/redis
    started=0
    if grep -q '^0\{31\}1 ' /proc/net/if_inet6 2>/dev/null; then
        # "-" marks an address as optional (redis >= 7).
        redis_major=$("$REDIS_SERVER" --version | sed -n 's/.* v=\([0-9]*\).*/\1/p')
        ipv6=::1
        [[ "${redis_major:-0}" -ge 7 ]] && ipv6=-::1
        if redis_start 127.0.0.1 "$ipv6" && redis_wait 10; then
            started=1
        fi
    fi
    if ((started == 0)); then
        redis_start 127.0.0.1 || true
    fi
fi

step "Redis: waiting for PONG (up to ${WAIT_SECS}s)"
redis_wait "$WAIT_SECS" ||
    die "Redis did not answer on $REDIS_HOST:$REDIS_PORT within ${WAIT_SECS}s" \
        "(see /var/log/redis/ci.log)"
redis_version=$(timeout 5 "$REDIS_CLI" -h "$REDIS_HOST" -p "$REDIS_PORT" info server </dev/null |
    sed -n 's/^redis_version:\([^[:space:]]*\).*/\1/p')

# --- environment for the tests ---------------------------------------------
export MOJASWITCH_TEST_MYSQL_URL="${MOJASWITCH_TEST_MYSQL_URL:-mysql://$TEST_DB_USER:$TEST_DB_PASS@$MYSQL_HOST:$MYSQL_PORT}"
export MOJASWITCH_TEST_REDIS_URL="${MOJASWITCH_TEST_REDIS_URL:-redis://$REDIS_HOST:$REDIS_PORT}"
# The cluster tests start (and restart) private redis-server processes.
export MOJASWITCH_TEST_REDIS_SERVER="${MOJASWITCH_TEST_REDIS_SERVER:-$REDIS_SERVER}"

echo "services: MariaDB $mysql_version on $MYSQL_HOST:$MYSQL_PORT" \
    "(user $TEST_DB_USER, innodb_flush_log_at_trx_commit=$mysql_flush)," \
    "Redis ${redis_version:-?} on $REDIS_HOST:$REDIS_PORT;" \
    "MOJASWITCH_TEST_MYSQL_URL=$MOJASWITCH_TEST_MYSQL_URL" \
    "MOJASWITCH_TEST_REDIS_URL=$MOJASWITCH_TEST_REDIS_URL"

if ((services_only)); then
    exit 0
fi

# --- the real DFSP connector (tests/tests/sdk_adapter.rs) -------------------
# Installed once into a cache outside the repository; a no-op when cached.
step "SDK scheme adapter: installing (cached after the first run)"
bash scripts/install-sdk-adapter.sh ||
    die "installing @mojaloop/sdk-scheme-adapter failed (needs node, npm, make, g++, python3)"

# --- tests -----------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 ||
    die "cargo not found; install Rust with rustup (rust-toolchain.toml pins the version)"

threads=(--test-threads=2)
for a in "${bin_args[@]}"; do
    [[ "$a" == --test-threads* ]] && threads=()
done

scope=(--workspace)
for a in "${cargo_args[@]}"; do
    case "$a" in -p* | --package | --package=*) scope=() ;; esac
done

# --release: the integration tests start the real `mojaswitch` binary.
cmd=(cargo test "${scope[@]}" --release "${cargo_args[@]}" -- "${threads[@]}" "${bin_args[@]}")
step "${cmd[*]}"
if ((${#cargo_args[@]} || ${#bin_args[@]})); then
    exec "${cmd[@]}"
fi
"${cmd[@]}"

# --- benchmark (figures only) ----------------------------------------------
# The whole suite passed: a short run of the load generator on each backend,
# so every CI log carries comparable figures (docs/performance.md). Its speed
# never fails CI; its books check does (exit 2: the database's committed
# count differs from the generator's, or `mojaswitch check` failed).
# MOJASWITCH_CI_BENCH=0 skips it.
if [[ "${MOJASWITCH_CI_BENCH:-1}" != 0 ]]; then
    for backend in sqlite mysql; do
        bench=(target/release/mojaswitch-bench --backend "$backend" --rate 1000
            --ramp-s 2 --steady-s 8 --json "target/bench-ci-$backend.json")
        step "benchmark: ${bench[*]}"
        status=0
        "${bench[@]}" >/dev/null || status=$?
        [[ $status == 2 ]] && die "benchmark on $backend: the books do not balance (see above)"
        ((status == 0)) || warn "benchmark on $backend did not run to the end (exit $status); figures unavailable"
    done
fi
