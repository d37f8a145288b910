#!/usr/bin/env bash
# walship: build, start and exercise a local two-node cluster with its ZooKeeper.
#
# Usage: scripts/cluster.sh [options]
#
#   --keys N        keys to write before the failover (default 1000; N/2 more after it)
#   --release       build and run the release binary (default: debug)
#   --bin PATH      use this walship binary, do not build
#   --run-dir DIR   where data, logs and pid files go (default ./.walship-run; wiped first)
#   --timeout S     deadline of every wait, in seconds (default 60)
#   --keep          leave ZooKeeper and both nodes running after a successful run
#   --stop          stop a cluster left running by --keep, and exit
#   -h, --help      this help
#
# On a fresh Debian machine it installs ZooKeeper (zk/zk.sh install; needs root or
# sudo), builds the binary, picks free loopback ports, starts ZooKeeper and nodes 1
# and 2, waits for a leader, then: writes N keys through both nodes, reads them
# back linearizably from both, kill -9's the leader, waits for the survivor to
# lead, writes N/2 more, restarts the dead node, waits until it has caught up and
# verifies every value on both nodes. Everything it started is stopped on exit
# (by pid), unless --keep. Logs stay in the run dir: zk/zk.log, node1.log, node2.log.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ZK_SH="$ROOT/zk/zk.sh"

KEYS=1000
PROFILE=debug
BIN=""
RUN_DIR="$ROOT/.walship-run"
TIMEOUT_S=60
KEEP=0
STOP_ONLY=0

die() { echo "cluster.sh: $*" >&2; exit 1; }
bad_usage() { echo "cluster.sh: $* (see scripts/cluster.sh --help)" >&2; exit 2; }
say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

need_value() { [[ $# -ge 2 && -n "$2" && "$2" != --* ]] || bad_usage "$1 needs a value"; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --keys) need_value "$@"; KEYS="$2"; shift 2 ;;
        --keys=*) KEYS="${1#*=}"; shift ;;
        --release) PROFILE=release; shift ;;
        --bin) need_value "$@"; BIN="$2"; shift 2 ;;
        --bin=*) BIN="${1#*=}"; shift ;;
        --run-dir) need_value "$@"; RUN_DIR="$2"; shift 2 ;;
        --run-dir=*) RUN_DIR="${1#*=}"; shift ;;
        --timeout) need_value "$@"; TIMEOUT_S="$2"; shift 2 ;;
        --timeout=*) TIMEOUT_S="${1#*=}"; shift ;;
        --keep) KEEP=1; shift ;;
        --stop) STOP_ONLY=1; shift ;;
        -h | --help) sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) bad_usage "unknown option '$1'" ;;
    esac
done
[[ "$KEYS" =~ ^[1-9][0-9]*$ ]] || bad_usage "--keys needs a positive integer, got '$KEYS'"
[[ "$TIMEOUT_S" =~ ^[1-9][0-9]*$ ]] || bad_usage "--timeout needs a positive number of seconds, got '$TIMEOUT_S'"
[[ -n "$RUN_DIR" ]] || bad_usage "--run-dir is empty"
mkdir -p "$RUN_DIR"
RUN_DIR="$(cd "$RUN_DIR" && pwd)"
[[ "$RUN_DIR" != / && "$RUN_DIR" != "$ROOT" && "$RUN_DIR" != "$HOME" ]] || bad_usage "refusing to use $RUN_DIR as the run dir (it is wiped)"

CURL=(curl -q --silent --show-error --noproxy '*' --max-time 10)

# ---------------------------------------------------------------- processes

# Alive and not a zombie.
alive() {
    local state
    kill -0 "$1" 2>/dev/null || return 1
    state="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
    [[ -n "$state" && "$state" != Z ]]
}

# The pid in a node's pid file, if that process is alive and is our node (its
# command line names this run dir), so a recycled pid is never signalled.
node_pid() {
    local f="$RUN_DIR/node$1.pid" pid
    [[ -s "$f" ]] || return 1
    pid="$(cat "$f")"
    [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$RUN_DIR/node$1" || return 1
    echo "$pid"
}

# Send a signal to node <id> and wait (deadline) until it is gone.
stop_node() {
    local id="$1" sig="${2:-TERM}" pid deadline
    pid="$(node_pid "$id")" || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 30))
    while alive "$pid"; do
        if ((SECONDS >= deadline)); then
            [[ "$sig" == KILL ]] && die "node $id (pid $pid) still alive after SIGKILL"
            echo "cluster.sh: node $id (pid $pid) ignored SIG$sig for 30s; sending SIGKILL" >&2
            sig=KILL
            kill -KILL "$pid" 2>/dev/null || true
            deadline=$((SECONDS + 10))
        fi
        sleep 0.05
    done
    wait "$pid" 2>/dev/null || true # reap it if it is our child
    rm -f "$RUN_DIR/node$id.pid"
}

stop_all() {
    local id
    for id in 1 2; do stop_node "$id" TERM || true; done
    if [[ -d "$RUN_DIR/zk" ]]; then "$ZK_SH" stop "$RUN_DIR/zk" >/dev/null 2>&1 || true; fi
}

if ((STOP_ONLY)); then
    stop_all
    echo "cluster.sh: stopped everything recorded in $RUN_DIR"
    exit 0
fi

# ---------------------------------------------------------------- set-up

if node_pid 1 >/dev/null || node_pid 2 >/dev/null || "$ZK_SH" status "$RUN_DIR/zk" >/dev/null 2>&1; then
    die "a cluster is still running in $RUN_DIR (from --keep?); stop it with: scripts/cluster.sh --stop${RUN_DIR:+ --run-dir $RUN_DIR}"
fi

command -v curl >/dev/null 2>&1 || die "curl is required (apt-get install -y curl)"

OK=0
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if ((OK && KEEP)); then
        return
    fi
    if ((!OK)); then
        if ((rc == 130 || rc == 143)); then
            echo "cluster.sh: interrupted; stopping everything. Logs in $RUN_DIR" >&2
        else
            echo "cluster.sh: FAILED (exit $rc); logs in $RUN_DIR (zk/zk.log, node1.log, node2.log)" >&2
        fi
        for id in 1 2; do
            if [[ -f "$RUN_DIR/node$id.log" ]]; then
                echo "----- last lines of node$id.log -----" >&2
                tail -n 15 "$RUN_DIR/node$id.log" >&2 || true
            fi
        done
    fi
    stop_all
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "ZooKeeper: checking installation"
"$ZK_SH" install

if [[ -z "$BIN" ]]; then
    command -v cargo >/dev/null 2>&1 || die "cargo not found (install Rust: https://rustup.rs)"
    say "building walship ($PROFILE)"
    if [[ "$PROFILE" == release ]]; then
        (cd "$ROOT" && cargo build --release --bin walship)
    else
        (cd "$ROOT" && cargo build --bin walship)
    fi
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE/walship"
fi
[[ -x "$BIN" ]] || die "walship binary not found or not executable: $BIN"
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"

# A fresh run dir: the cluster below starts from empty disks and an empty ZooKeeper.
rm -rf "${RUN_DIR:?}/zk" "$RUN_DIR"/node1 "$RUN_DIR"/node2 "$RUN_DIR"/*.log "$RUN_DIR"/*.pid "$RUN_DIR"/tmp

port_in_use() { timeout 1 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null; }
PICKED=" "
pick_port() {
    local p i
    for i in $(seq 200); do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        [[ "$PICKED" == *" $p "* ]] && continue
        port_in_use "$p" && continue
        PICKED+="$p "
        echo "$p"
        return 0
    done
    die "no free port found on 127.0.0.1"
}
ZK_PORT="$(pick_port)"
declare -A PORT
PORT[1]="$(pick_port)"
PORT[2]="$(pick_port)"
CLUSTER="demo-$(date +%s)"
TOKEN="$RANDOM$RANDOM"
url() { echo "http://127.0.0.1:${PORT[$1]}"; }

start_node() {
    local id="$1" deadline
    rm -f "$RUN_DIR/node$id.pid"
    echo "=== cluster.sh: starting node $id at $(date -Is) ===" >>"$RUN_DIR/node$id.log"
    # setsid: survives the terminal with --keep. The inner bash records its pid
    # and execs the binary, so the recorded pid is the node's.
    setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$RUN_DIR/node$id.pid" \
        env RUST_LOG="${RUST_LOG:-info}" "$BIN" node \
        --id "$id" --cluster "$CLUSTER" --zk "127.0.0.1:$ZK_PORT" \
        --data-dir "$RUN_DIR/node$id" --listen "127.0.0.1:${PORT[$id]}" \
        >>"$RUN_DIR/node$id.log" 2>&1 </dev/null &
    deadline=$((SECONDS + 10))
    until [[ -s "$RUN_DIR/node$id.pid" ]]; do
        ((SECONDS < deadline)) || die "node $id did not start"
        sleep 0.05
    done
}

# Wait until node <id> answers /health/live; fail early if it exits.
wait_live() {
    local id="$1" deadline=$((SECONDS + TIMEOUT_S)) pid
    pid="$(cat "$RUN_DIR/node$id.pid")"
    until "${CURL[@]}" --max-time 2 -o /dev/null -f "$(url "$id")/health/live" 2>/dev/null; do
        alive "$pid" || die "node $id exited during start-up; see $RUN_DIR/node$id.log"
        ((SECONDS < deadline)) || die "node $id not live on $(url "$id") after ${TIMEOUT_S}s"
        sleep 0.1
    done
}

# Minimal JSON field extraction (flat objects, no jq needed).
json_field() { sed -n "s/.*\"$2\"[[:space:]]*:[[:space:]]*\"\{0,1\}\([^,\"}]*\)\"\{0,1\}.*/\1/p" <<<"$1"; }

status_of() { "${CURL[@]}" --max-time 2 "$(url "$1")/v1/status" 2>/dev/null; }

# Print the id of the one node (among <ids>) that leads and is ready.
ready_leader() {
    local id s found=()
    for id in "$@"; do
        s="$(status_of "$id")" || continue
        [[ "$(json_field "$s" role)" == leader && "$(json_field "$s" leader)" == "$id" ]] || continue
        "${CURL[@]}" --max-time 2 -o /dev/null -f "$(url "$id")/health/ready" 2>/dev/null || continue
        found+=("$id")
    done
    [[ ${#found[@]} -eq 1 ]] && echo "${found[0]}"
}

wait_leader() {
    local deadline=$((SECONDS + TIMEOUT_S)) leader
    until leader="$(ready_leader "$@")"; do
        ((SECONDS < deadline)) || die "no ready leader among node(s) $* after ${TIMEOUT_S}s; statuses: $(for i in "$@"; do printf '%s ' "$(status_of "$i" || echo "node $i: no answer")"; done)"
        sleep 0.1
    done
    echo "$leader"
}

# ---------------------------------------------------------------- data

declare -A EXPECT
mkdir -p "$RUN_DIR/tmp"

# Run a batch of requests in one curl process (keep-alive) from a curl config
# file; print "key<TAB>status<TAB>body" per request.
run_batch() {
    local cfg="$1"
    "${CURL[@]}" --config "$cfg" | awk '
        /^@@@ / { n = split($3, a, "/"); key = a[n]; sub(/\?.*/, "", key)
                  printf "%s\t%s\t%s\n", key, $2, body; body = ""; next }
        { body = body $0 }'
}

# curl config block for one request.
request_block() { # method url [data]
    printf 'next\nurl = "%s"\nrequest = "%s"\n' "$2" "$1"
    [[ $# -ge 3 ]] && printf 'data-binary = "%s"\n' "$3"
    printf 'noproxy = "*"\nmax-time = 10\nsilent\nshow-error\nwrite-out = "\\n@@@ %%{http_code} %%{url_effective}\\n"\n'
}

RETRIED=0 # requests retried after a transient answer (503/504/5xx/no response)

# send_until_definitive <kind> <cfg builder args...>: the requests listed in
# $RUN_DIR/tmp/pending ("method<TAB>url<TAB>data" per line) are sent in one curl
# batch; those without a definitive answer (writes: 200; reads: 200 or 404) are
# sent again until none is left or the deadline passes. Retrying is safe: reads
# are idempotent and every write puts the same value again. Definitive answers
# go to $RUN_DIR/tmp/answers ("key<TAB>status<TAB>body").
send_until_definitive() {
    local kind="$1" deadline=$((SECONDS + TIMEOUT_S)) cfg="$RUN_DIR/tmp/batch.cfg" method u data left
    local pending="$RUN_DIR/tmp/pending" answers="$RUN_DIR/tmp/answers" out="$RUN_DIR/tmp/batch.out"
    : >"$answers"
    while :; do
        exec 4>"$cfg"
        while IFS=$'\t' read -r method u data; do
            if [[ "$method" == PUT ]]; then request_block PUT "$u" "$data" >&4; else request_block GET "$u" >&4; fi
        done <"$pending"
        exec 4>&-
        sed -i '1{/^next$/d}' "$cfg"
        run_batch "$cfg" >"$out" || true
        if [[ "$kind" == write ]]; then
            awk -F'\t' '$2 == 200' "$out" >>"$answers"
            awk -F'\t' '$2 != 200 { print $1 }' "$out" >"$out.retry"
        else
            awk -F'\t' '$2 == 200 || $2 == 404' "$out" >>"$answers"
            awk -F'\t' '$2 != 200 && $2 != 404 { print $1 }' "$out" >"$out.retry"
        fi
        left="$(wc -l <"$out.retry")"
        ((left == 0)) && return 0
        if ((SECONDS >= deadline)); then
            echo "cluster.sh: $left requests still without a definitive answer after ${TIMEOUT_S}s; last answers (key, status, body):" >&2
            awk -F'\t' -v kind="$kind" '(kind == "write" && $2 != 200) || (kind != "write" && $2 != 200 && $2 != 404)' "$out" | head -n 5 >&2
            exit 1
        fi
        RETRIED=$((RETRIED + left))
        echo "cluster.sh: retrying $left ${kind}s after transient answers, e.g.: $(awk -F'\t' '$2 != 200 && $2 != 404' "$out" | head -n 1)" >&2
        # Keep only the pending lines whose key must be retried.
        awk -F'\t' 'NR == FNR { retry[$1] = 1; next } { n = split($2, a, "/"); k = a[n]; sub(/\?.*/, "", k); if (k in retry) print }' \
            "$out.retry" "$pending" >"$pending.next"
        mv "$pending.next" "$pending"
        sleep 0.2
    done
}

# write_keys <prefix> <count> <node ids...>: PUT <prefix>-000001.. round-robin over the nodes.
write_keys() {
    local prefix="$1" count="$2" i key value id
    shift 2
    local nodes=("$@")
    exec 5>"$RUN_DIR/tmp/pending"
    for ((i = 1; i <= count; i++)); do
        printf -v key '%s-%06d' "$prefix" "$i"
        value="$key-$TOKEN"
        id="${nodes[$((i % ${#nodes[@]}))]}"
        printf 'PUT\thttp://127.0.0.1:%s/v1/kv/%s\t%s\n' "${PORT[$id]}" "$key" "$value" >&5
        EXPECT[$key]="$value"
    done
    exec 5>&-
    send_until_definitive write
}

# verify_keys <node id> [stale]: read every expected key from the node and compare.
verify_keys() {
    local id="$1" query="" key code body bad=0 n=0
    [[ "${2:-}" == stale ]] && query="?stale=true"
    exec 5>"$RUN_DIR/tmp/pending"
    for key in "${!EXPECT[@]}"; do
        printf 'GET\thttp://127.0.0.1:%s/v1/kv/%s%s\t\n' "${PORT[$id]}" "$key" "$query" >&5
    done
    exec 5>&-
    send_until_definitive read
    while IFS=$'\t' read -r key code body; do
        n=$((n + 1))
        if [[ "$code" != 200 || "$body" != "${EXPECT[$key]-}" ]]; then
            ((bad < 5)) && echo "cluster.sh: node $id: $key: HTTP $code '$body', expected '${EXPECT[$key]-}'" >&2
            bad=$((bad + 1))
        fi
    done <"$RUN_DIR/tmp/answers"
    ((n == ${#EXPECT[@]})) || die "node $id: $n answers for ${#EXPECT[@]} reads"
    ((bad == 0)) || die "node $id: $bad of $n keys wrong (${2:-linearizable} reads)"
}

# ---------------------------------------------------------------- the run

say "starting ZooKeeper on 127.0.0.1:$ZK_PORT"
"$ZK_SH" start "$RUN_DIR/zk" "$ZK_PORT" >/dev/null
say "starting nodes 1 (127.0.0.1:${PORT[1]}) and 2 (127.0.0.1:${PORT[2]}), cluster '$CLUSTER'"
start_node 1
start_node 2
wait_live 1
wait_live 2
T0="$(now_ms)"
LEADER="$(wait_leader 1 2)"
say "node $LEADER leads (elected within $(($(now_ms) - T0)) ms of both nodes being live)"

T0="$(now_ms)"
write_keys key "$KEYS" 1 2
say "wrote $KEYS keys through nodes 1 and 2 in $(($(now_ms) - T0)) ms"
verify_keys 1
verify_keys 2
say "read all $KEYS back linearizably from both nodes"

OLD="$LEADER"
SURVIVOR=$((3 - OLD))
say "kill -9 leader node $OLD (pid $(node_pid "$OLD"))"
T0="$(now_ms)"
stop_node "$OLD" KILL
LEADER="$(wait_leader "$SURVIVOR")"
FAILOVER_MS=$(($(now_ms) - T0))
say "node $LEADER leads after ${FAILOVER_MS} ms"

MORE=$((KEYS / 2 > 0 ? KEYS / 2 : 1))
write_keys after-failover "$MORE" "$SURVIVOR"
verify_keys "$SURVIVOR"
say "wrote $MORE more keys through node $SURVIVOR alone; all ${#EXPECT[@]} readable there"

say "restarting node $OLD with its data dir"
T0="$(now_ms)"
start_node "$OLD"
wait_live "$OLD"
TARGET="$(json_field "$(status_of "$SURVIVOR")" applied_index)"
[[ "$TARGET" =~ ^[0-9]+$ ]] || die "node $SURVIVOR reports no applied_index: $(status_of "$SURVIVOR")"
deadline=$((SECONDS + TIMEOUT_S))
until [[ "$(json_field "$(status_of "$OLD" || true)" applied_index)" =~ ^[0-9]+$ ]] &&
    (($(json_field "$(status_of "$OLD")" applied_index) >= TARGET)); do
    ((SECONDS < deadline)) || die "node $OLD did not catch up to index $TARGET within ${TIMEOUT_S}s: $(status_of "$OLD" || echo 'no answer')"
    sleep 0.1
done
CATCHUP_MS=$(($(now_ms) - T0))
verify_keys 1
verify_keys 2
verify_keys "$OLD" stale
say "node $OLD rejoined, caught up to index $TARGET in ${CATCHUP_MS} ms; all ${#EXPECT[@]} keys verified on both nodes (and locally on node $OLD)"

OK=1
cat <<EOF

walship cluster '$CLUSTER': OK
  writes       $KEYS through nodes 1+2, then $MORE after the failover; ${#EXPECT[@]} keys verified on both nodes
  failover     leader node $OLD killed -9; node $SURVIVOR led after ${FAILOVER_MS} ms
  rejoin       node $OLD restarted, caught up in ${CATCHUP_MS} ms
  retries      $RETRIED requests retried after a transient 503/504/no answer
  ZooKeeper    127.0.0.1:$ZK_PORT   (zk/zk.sh status $RUN_DIR/zk)
  node 1       $(url 1)   log $RUN_DIR/node1.log
  node 2       $(url 2)   log $RUN_DIR/node2.log
EOF
if ((KEEP)); then
    echo
    echo "Left running (--keep). Try: curl -X PUT --data-binary hello $(url 1)/v1/kv/greeting; curl $(url 2)/v1/kv/greeting"
    echo "Stop it with: scripts/cluster.sh --stop --run-dir $RUN_DIR"
else
    echo "Stopping everything (use --keep to leave it running)."
fi
