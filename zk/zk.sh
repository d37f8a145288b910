#!/usr/bin/env bash
# walship: run a private, loopback-only ZooKeeper (the witness W) for development,
# scripts/cluster.sh and CI. Pure bash + coreutils; no python, no nc required.
#
#   zk/zk.sh install             install Debian's zookeeper package if it is missing
#   zk/zk.sh classpath           print the java classpath used to run ZooKeeper
#   zk/zk.sh config <dir> <port> write <dir>/zoo.cfg and <dir>/log4j.properties only
#   zk/zk.sh start <dir> <port>  start in the background; wait until it serves; print pid
#   zk/zk.sh stop <dir>          SIGTERM the pid in <dir>/zk.pid, wait, SIGKILL if needed
#   zk/zk.sh kill <dir>          SIGKILL the pid in <dir>/zk.pid (crash simulation)
#   zk/zk.sh status <dir>        print state; exit 0 if serving, 3 if not
#   zk/zk.sh probe <port> [cmd]  send a four-letter word (default srvr) to 127.0.0.1:<port>
#
# Files in <dir>: zoo.cfg, log4j.properties, data/ (snapshots + txn log), zk.pid,
# zk.port, zk.log (ZooKeeper's log), zk.out (JVM stdout/stderr: crashes, warnings).
#
# Environment: ZK_CLASSPATH (override the classpath), ZK_JVM_FLAGS (default below),
# ZK_START_TIMEOUT_S (default 30), ZK_STOP_TIMEOUT_S (default 15), JAVA (default java).
#
# Security (start and config; see README "ZooKeeper SASL and TLS"):
#   ZK_SASL_JAAS_FILE=<file>  SASL on: the JAAS file of `walship zk-jaas --secret-file F`
#                             (nodes then run with --zk-sasl)
#   ZK_TLS_DIR=<dir>          a secure client port with `walship dev-ca --dir <dir>`'s
#                             zk-keystore.pem and ca.pem (nodes: --zk-tls-ca-file <dir>/ca.pem)
#   ZK_SECURE_PORT=<port>     its port; unset: <port> itself, and no plain port (TLS only)
#   ZK_TLS_CLIENT_AUTH=need|want|none  client certificates (default need)
set -euo pipefail

ZK_DIR_SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
JAVA="${JAVA:-java}"
ZK_MAIN=org.apache.zookeeper.server.quorum.QuorumPeerMain
# Small heap and the serial collector: several servers share a 2-core CI box.
ZK_JVM_FLAGS="${ZK_JVM_FLAGS:--Xms32m -Xmx1g -XX:+UseSerialGC -Djava.net.preferIPv4Stack=true}"
ZK_START_TIMEOUT_S="${ZK_START_TIMEOUT_S:-30}"
ZK_STOP_TIMEOUT_S="${ZK_STOP_TIMEOUT_S:-15}"

die() { echo "zk.sh: $*" >&2; exit 1; }

usage() {
    sed -n '2,30p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# The classpath: Debian's zookeeper.jar (its manifest names netty, jetty, jackson,
# slf4j-api, ...) plus exactly one slf4j binding (log4j 1.2), so logging goes where
# log4j.properties says. Never /usr/share/java/*: it holds several slf4j bindings
# and the JVM would pick one at random. Keep in sync with crates/testkit/src/zk.rs.
zk_classpath() {
    if [[ -n "${ZK_CLASSPATH:-}" ]]; then
        printf '%s\n' "$ZK_CLASSPATH"
        return 0
    fi
    local j=/usr/share/java jar
    for jar in zookeeper.jar zookeeper-jute.jar slf4j-api.jar slf4j-log4j12.jar log4j-1.2.jar; do
        [[ -f "$j/$jar" ]] || return 1
    done
    local cp="$j/zookeeper.jar:$j/zookeeper-jute.jar:$j/slf4j-api.jar:$j/slf4j-log4j12.jar:$j/log4j-1.2.jar"
    # Netty's codec, which zookeeper.jar's manifest leaves out: the secure client
    # port (NettyServerCnxnFactory with TLS) needs it.
    if [[ -f "$j/netty-codec.jar" ]]; then cp="$cp:$j/netty-codec.jar"; fi
    printf '%s\n' "$cp"
}

# True when java runs and the classpath really loads ZooKeeper's classes.
zk_available() {
    local cp
    command -v "$JAVA" >/dev/null 2>&1 || return 1
    cp="$(zk_classpath)" || return 1
    "$JAVA" -cp "$cp" org.apache.zookeeper.version.VersionInfoMain >/dev/null 2>&1
}

cmd_install() {
    if zk_available; then
        echo "zk.sh: ZooKeeper present: $("$JAVA" -cp "$(zk_classpath)" org.apache.zookeeper.version.VersionInfoMain 2>/dev/null)"
        return 0
    fi
    local sudo=()
    if [[ "$(id -u)" -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "ZooKeeper is missing and installing it needs root (no sudo found)"
        sudo=(sudo)
    fi
    command -v apt-get >/dev/null 2>&1 || die "ZooKeeper is missing and apt-get is not available; set ZK_CLASSPATH to an existing install"
    echo "zk.sh: installing Debian package zookeeper" >&2
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends zookeeper
    zk_available || die "zookeeper installed but $ZK_MAIN still does not load (classpath: $(zk_classpath || echo '?'))"
    echo "zk.sh: ZooKeeper installed: $("$JAVA" -cp "$(zk_classpath)" org.apache.zookeeper.version.VersionInfoMain 2>/dev/null)"
}

check_port() {
    [[ "$1" =~ ^[0-9]+$ ]] && (( $1 >= 1 && $1 <= 65535 )) || die "bad port '$1' (want 1..65535)"
}

# Send a four-letter word to 127.0.0.1:<port>; prints the reply. Fails on no answer
# within 2 s. bash's /dev/tcp, so no nc needed; over TLS (openssl s_client, with
# ZooKeeper's own certificate as the client's) when PROBE_TLS_DIR is set.
PROBE_TLS_DIR=
probe() {
    local port="$1" word="${2:-srvr}"
    if [[ -n "$PROBE_TLS_DIR" ]]; then
        printf '%s' "$word" | timeout 2 openssl s_client -connect "127.0.0.1:$port" -quiet \
            -CAfile "$PROBE_TLS_DIR/ca.pem" -cert "$PROBE_TLS_DIR/zk.pem" -key "$PROBE_TLS_DIR/zk-key.pem" 2>/dev/null
        return
    fi
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1; printf "%s" "$2" >&3; cat <&3' _ "$port" "$word" 2>/dev/null
}

# Is something listening on 127.0.0.1:<port>?
port_busy() {
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

write_config() {
    local dir="$1" port="$2" tls abs
    mkdir -p "$dir/data"
    sed -e "s|@DATA_DIR@|$dir/data|" -e "s|@CLIENT_PORT@|$port|" \
        "$ZK_DIR_SELF/zoo.cfg.template" >"$dir/zoo.cfg"
    cp "$ZK_DIR_SELF/log4j.properties" "$dir/log4j.properties"
    rm -f "$dir/zk.tls" "$dir/zk.jaas"
    if [[ -n "${ZK_TLS_DIR:-}" ]]; then
        tls="$(cd "$ZK_TLS_DIR" && pwd)" || die "ZK_TLS_DIR=$ZK_TLS_DIR is not a directory"
        for f in zk-keystore.pem ca.pem; do
            [[ -f "$tls/$f" ]] || die "$tls/$f missing (write it with: walship dev-ca --dir $tls --cluster <name>)"
        done
        if [[ -z "${ZK_SECURE_PORT:-}" ]]; then
            # TLS only: no plain client port; probes speak TLS.
            sed -i -e '/^clientPort=/d' -e '/^clientPortAddress=/d' "$dir/zoo.cfg"
            echo "$tls" >"$dir/zk.tls"
        fi
        check_port "${ZK_SECURE_PORT:-$port}"
        {
            echo
            echo "# TLS (zk.sh, ZK_TLS_DIR): the secure client port; certificates from walship dev-ca."
            echo "serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory"
            echo "secureClientPort=${ZK_SECURE_PORT:-$port}"
            echo "secureClientPortAddress=127.0.0.1"
            echo "ssl.keyStore.location=$tls/zk-keystore.pem"
            echo "ssl.keyStore.type=PEM"
            echo "ssl.trustStore.location=$tls/ca.pem"
            echo "ssl.trustStore.type=PEM"
            echo "ssl.clientAuth=${ZK_TLS_CLIENT_AUTH:-need}"
        } >>"$dir/zoo.cfg"
    fi
    if [[ -n "${ZK_SASL_JAAS_FILE:-}" ]]; then
        [[ -f "$ZK_SASL_JAAS_FILE" ]] || die "ZK_SASL_JAAS_FILE=$ZK_SASL_JAAS_FILE not found (write it with: walship zk-jaas --secret-file F --out FILE)"
        abs="$(cd "$(dirname "$ZK_SASL_JAAS_FILE")" && pwd)/$(basename "$ZK_SASL_JAAS_FILE")"
        echo "$abs" >"$dir/zk.jaas"
        {
            echo
            echo "# SASL (zk.sh, ZK_SASL_JAAS_FILE): DIGEST-MD5 users from the JAAS file given to"
            echo "# the JVM (-Djava.security.auth.login.config=$abs)."
            echo "authProvider.sasl=org.apache.zookeeper.server.auth.SASLAuthenticationProvider"
        } >>"$dir/zoo.cfg"
    fi
}

# The pid in <dir>/zk.pid, if that process is alive and is our ZooKeeper (its
# command line names this dir's zoo.cfg), so a recycled pid is never signalled.
our_pid() {
    local dir="$1" pid
    [[ -f "$dir/zk.pid" ]] || return 1
    pid="$(cat "$dir/zk.pid")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$dir/zoo.cfg" || return 1
    printf '%s\n' "$pid"
}

abs_dir() {
    mkdir -p "$1"
    (cd "$1" && pwd)
}

cmd_config() {
    [[ $# -eq 2 ]] || usage
    local dir port
    check_port "$2"
    dir="$(abs_dir "$1")"
    port="$2"
    write_config "$dir" "$port"
    echo "$dir/zoo.cfg"
}

cmd_start() {
    [[ $# -eq 2 ]] || usage
    local dir port cp pid deadline reply
    check_port "$2"
    dir="$(abs_dir "$1")"
    port="$2"
    if pid="$(our_pid "$dir")"; then
        die "already running in $dir (pid $pid); stop it first"
    fi
    port_busy "$port" && die "port $port on 127.0.0.1 is already in use (not starting; it is not ours)"
    cp="$(zk_classpath)" || die "ZooKeeper not found (run: zk/zk.sh install, or set ZK_CLASSPATH)"
    write_config "$dir" "$port"
    echo "$port" >"$dir/zk.port"
    rm -f "$dir/zk.pid"
    local sec_flags=()
    if [[ -f "$dir/zk.jaas" ]]; then sec_flags+=("-Djava.security.auth.login.config=$(cat "$dir/zk.jaas")"); fi
    if [[ -f "$dir/zk.tls" ]]; then PROBE_TLS_DIR="$(cat "$dir/zk.tls")"; fi

    # setsid: the server survives the terminal that started it (cluster.sh --keep).
    # The inner bash writes its own pid, then execs java: that pid is the JVM's.
    # shellcheck disable=SC2086 # ZK_JVM_FLAGS is a list of flags
    setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$dir/zk.pid" \
        "$JAVA" $ZK_JVM_FLAGS ${sec_flags[@]+"${sec_flags[@]}"} \
        -Dzookeeper.log.dir="$dir" \
        -Dlog4j.configuration="file:$dir/log4j.properties" \
        -cp "$cp" "$ZK_MAIN" "$dir/zoo.cfg" \
        >>"$dir/zk.out" 2>&1 </dev/null &

    deadline=$((SECONDS + ZK_START_TIMEOUT_S))
    while :; do
        if [[ -s "$dir/zk.pid" ]]; then
            pid="$(cat "$dir/zk.pid")"
            if ! alive "$pid"; then
                echo "zk.sh: ZooKeeper exited during start-up; last lines of $dir/zk.out and zk.log:" >&2
                tail -n 20 "$dir/zk.out" "$dir/zk.log" >&2 2>/dev/null || true
                exit 1
            fi
            # ruok -> imok says the server runs; srvr's "Mode:" says it serves.
            if [[ "$(probe "$port" ruok || true)" == imok ]] &&
                reply="$(probe "$port" srvr)" && grep -q '^Mode:' <<<"$reply"; then
                echo "$pid"
                return 0
            fi
        fi
        if ((SECONDS >= deadline)); then
            echo "zk.sh: ZooKeeper on 127.0.0.1:$port did not serve within ${ZK_START_TIMEOUT_S}s; stopping it. See $dir/zk.log" >&2
            tail -n 20 "$dir/zk.out" "$dir/zk.log" >&2 2>/dev/null || true
            [[ -n "${pid:-}" ]] && kill -9 "$pid" 2>/dev/null || true
            exit 1
        fi
        sleep 0.1
    done
}

# Alive and not a zombie (a zombie has exited; its parent has not reaped it yet).
alive() {
    local state
    kill -0 "$1" 2>/dev/null || return 1
    state="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
    [[ -n "$state" && "$state" != Z ]]
}

# Signal the server and wait (with a deadline) until the process is gone.
stop_with() {
    local dir="$1" sig="$2" pid deadline
    if ! pid="$(our_pid "$dir")"; then
        echo "zk.sh: not running in $dir" >&2
        rm -f "$dir/zk.pid"
        return 0
    fi
    kill "-$sig" "$pid" 2>/dev/null || true
    deadline=$((SECONDS + ZK_STOP_TIMEOUT_S))
    while alive "$pid"; do
        if ((SECONDS >= deadline)); then
            [[ "$sig" == KILL ]] && die "pid $pid still alive after SIGKILL"
            echo "zk.sh: pid $pid ignored SIG$sig for ${ZK_STOP_TIMEOUT_S}s; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
            deadline=$((SECONDS + 5))
            sig=KILL
        fi
        sleep 0.1
    done
    rm -f "$dir/zk.pid"
    echo "zk.sh: stopped pid $pid (SIG$sig)"
}

cmd_stop() {
    [[ $# -eq 1 ]] || usage
    stop_with "$(abs_dir "$1")" TERM
}

cmd_kill() {
    [[ $# -eq 1 ]] || usage
    stop_with "$(abs_dir "$1")" KILL
}

cmd_status() {
    [[ $# -eq 1 ]] || usage
    local dir pid port reply
    [[ -d "$1" ]] || { echo "not running (no dir $1)"; exit 3; }
    dir="$(cd "$1" && pwd)"
    if ! pid="$(our_pid "$dir")"; then
        echo "not running ($dir)"
        exit 3
    fi
    port="$(cat "$dir/zk.port" 2>/dev/null || echo '?')"
    if [[ -f "$dir/zk.tls" ]]; then PROBE_TLS_DIR="$(cat "$dir/zk.tls")"; fi
    if reply="$(probe "$port" srvr)" && grep -q '^Mode:' <<<"$reply"; then
        echo "running pid $pid port $port $(grep -E '^(Mode|Zxid|Node count):' <<<"$reply" | tr '\n' ' ')"
        exit 0
    fi
    echo "pid $pid alive but not serving on 127.0.0.1:$port"
    exit 3
}

cmd_probe() {
    [[ $# -ge 1 && $# -le 2 ]] || usage
    check_port "$1"
    probe "$1" "${2:-srvr}" || die "no answer from 127.0.0.1:$1"
    echo
}

[[ $# -ge 1 ]] || usage
sub="$1"
shift
case "$sub" in
    install) [[ $# -eq 0 ]] || usage; cmd_install ;;
    classpath) zk_classpath || die "ZooKeeper not found (run: zk/zk.sh install)" ;;
    config) cmd_config "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    kill) cmd_kill "$@" ;;
    status) cmd_status "$@" ;;
    probe) cmd_probe "$@" ;;
    -h | --help | help) usage ;;
    *) die "unknown subcommand '$sub' (install|classpath|config|start|stop|kill|status|probe)" ;;
esac
