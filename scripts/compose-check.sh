#!/usr/bin/env bash
# walship: the docker-compose story end to end, measured. Needs docker and
# docker-compose (1.29 or later) and the base images (from Docker Hub, or
# scripts/docker-standins.sh where Docker Hub is unreachable).
#
#   scripts/compose-check.sh [--ensemble] [--no-build] [--soak CYCLES] [--keep]
#
# build the image; up; both nodes healthy; write on one node, read on the
# other; `walship status` inside a container; a writer in the background;
# docker kill of the walship leader's container and the time until the other node
# acknowledges a write; the killed node started again (healthy, follows,
# holds the data); docker-compose stop of the new leader (hand-over) and
# start; with --ensemble (docker-compose.ensemble.yml: 3 ZooKeeper servers)
# also docker kill of the ZooKeeper leader's container while writing, and its
# restart; every acknowledged write read back; `walship wal inspect`;
# optionally the soak (docker-compose run --rm soak --cycles N); down -v.
# A kill's failover is timed from the container's death (docker inspect's
# FinishedAt) to the acknowledgement of the first write a prober sent the
# survivor after it;
# a stop's from the engine's SIGTERM (docker events) to the acknowledgement of
# the background writer's first write sent after it.
# Prints each measurement as it goes and a summary; exit 0 when all held.
#
# Runs as its own compose project (COMPOSE_PROJECT_NAME, default
# walship-check) with the nodes on 127.0.0.1:18081 and :18082
# (WALSHIP_NODE1_PORT, WALSHIP_NODE2_PORT), so it does not touch a cluster
# started from the README; `down -v` at the end removes only its own
# containers and volumes (--keep leaves them running).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ENSEMBLE=0 BUILD=1 KEEP=0 SOAK=0
while (($#)); do
    case "$1" in
        --ensemble) ENSEMBLE=1 ;;
        --no-build) BUILD=0 ;;
        --keep) KEEP=1 ;;
        --soak) SOAK="${2:?--soak needs a cycle count}"; shift ;;
        *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
    shift
done

export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-walship-check}"
export WALSHIP_NODE1_PORT="${WALSHIP_NODE1_PORT:-18081}"
export WALSHIP_NODE2_PORT="${WALSHIP_NODE2_PORT:-18082}"
FILES=(-f docker-compose.yml)
((ENSEMBLE)) && FILES+=(-f docker-compose.ensemble.yml)
dc() { docker-compose "${FILES[@]}" "$@"; }

T0=$(date +%s%3N)
now() { date +%s%3N; }
say() { local t; t=$(now); printf '[%7.1fs] %s\n' "$(((t - T0) / 100))e-1" "$*"; }
SUMMARY=()
measured() { say "MEASURED $1: $2"; SUMMARY+=("$1: $2"); }
FAILED=0
fail() { say "FAIL: $*"; FAILED=1; SUMMARY+=("FAIL: $*"); }
die() { say "FAIL: $*"; exit 1; }

port() { if [[ $1 == 1 ]]; then echo "$WALSHIP_NODE1_PORT"; else echo "$WALSHIP_NODE2_PORT"; fi; }
other() { echo $((3 - $1)); }
status_json() { curl -fsS --max-time 1 "http://127.0.0.1:$(port "$1")/v1/status" 2>/dev/null || true; }
field() { sed -n "s/.*\"$1\":\"\{0,1\}\([a-z0-9]*\).*/\1/p"; }
# The node that says it leads, or nothing.
leader() {
    local id
    for id in 1 2; do
        [[ "$(status_json "$id" | field role)" == leader ]] && { echo "$id"; return; }
    done
}
wait_leader() { # [not_id]
    local deadline=$(($(now) + 60000)) l
    while (($(now) < deadline)); do
        l=$(leader)
        [[ -n "$l" && "$l" != "${1:-}" ]] && { echo "$l"; return; }
        sleep 0.1
    done
    return 1
}
health() { docker inspect -f '{{.State.Health.Status}}' "$(dc ps -q "$1")" 2>/dev/null || echo none; }
wait_healthy() {
    local deadline=$(($(now) + 120000))
    until [[ "$(health "$1")" == healthy ]]; do
        (($(now) < deadline)) || return 1
        sleep 0.2
    done
}
wait_live() {
    local deadline=$(($(now) + 120000))
    until curl -fsS --max-time 1 "http://127.0.0.1:$(port "$1")/health/live" >/dev/null 2>&1; do
        (($(now) < deadline)) || return 1
        sleep 0.05
    done
}
put() { curl -s -o /dev/null -w '%{http_code}' --max-time "${3:-3}" -X PUT --data-binary "$2" "http://127.0.0.1:$(port "$1")/v1/kv/$4" || true; }
# When a container died (docker-compose kill), in ms since the epoch.
died_at() { date -d "$(docker inspect -f '{{.State.FinishedAt}}' "$(dc ps -q "$1")")" +%s%3N; }
# When the engine sent a container its stop signal (docker-compose stop), ms;
# $2: a time before it, in ms.
stop_signal_at() {
    local ns
    # --until one second ahead: it is whole seconds, and must not cut off
    # the current one.
    ns=$(docker events --since "$(($2 / 1000))" --until "$(($(date +%s) + 1))" --filter "container=$(dc ps -q "$1")" \
        --filter event=kill --format '{{.TimeNano}}' | head -n 1)
    [[ "$ns" =~ ^[0-9]+$ ]] || return 1
    echo $((ns / 1000000))
}
# The failover as the background writer saw it: from $1 (ms) until the
# acknowledgement of the first write sent at or after $1. Waits up to 60 s.
first_ack_after() {
    local t=$1 file="$WORK/${2:-writes}" deadline=$(($(now) + 60000)) ms
    while (($(now) < deadline)); do
        ms=$(awk -v t="$t" '$2 == 200 && $3 >= t { print $4 - t; exit }' "$file")
        [[ -n "$ms" ]] && { echo "$ms"; return; }
        sleep 0.1
    done
    return 1
}
# A prober: writes to node $1 (0.5 s timeout each, 10 ms apart) into
# $WORK/probe in the writer's format, until stop_prober. A kill's failover is
# timed with it: from the death to the acknowledgement of the first probe sent
# after it (first_ack_after ... probe).
start_prober() {
    : >"$WORK/probe"
    (
        i=0
        while :; do
            i=$((i + 1))
            t=$(now)
            code=$(put "$1" probe 0.5 "probe$i")
            echo "$i $code $t $(now)" >>"$WORK/probe"
            sleep 0.01
        done
    ) &
    PROBER=$!
}
stop_prober() { kill "$PROBER" 2>/dev/null || true; wait "$PROBER" 2>/dev/null || true; PROBER=""; }
# What the writer (or $2: probe) got for the writes it sent from $1 (ms)
# until that one.
writes_between() {
    awk -v t="$1" '$3 >= t { if ($2 == 200) exit; if (!($2 in n)) o[++k] = $2; n[$2]++ }
        END { for (i = 1; i <= k; i++) printf "%s%d x %s", (i > 1 ? ", " : ""), n[o[i]], o[i]; if (!k) printf "none" }' "$WORK/${2:-writes}"
}

cleanup() {
    [[ -n "${WRITER:-}" ]] && kill "$WRITER" 2>/dev/null || true
    [[ -n "${PROBER:-}" ]] && kill "$PROBER" 2>/dev/null || true
    if ((KEEP)); then
        say "--keep: left running (project $COMPOSE_PROJECT_NAME)"
    else
        say "docker-compose down -v"
        local t; t=$(now)
        dc down -v --remove-orphans >/dev/null 2>&1 || true
        say "down -v took $(($(now) - t)) ms"
    fi
    [[ -n "${WORK:-}" ]] && rm -rf "$WORK"
}

say "project $COMPOSE_PROJECT_NAME, files ${FILES[*]}, nodes on 127.0.0.1:$WALSHIP_NODE1_PORT and :$WALSHIP_NODE2_PORT"
docker-compose version --short >/dev/null || die "docker-compose not found"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer"
dc down -v --remove-orphans >/dev/null 2>&1 || true
WORK=$(mktemp -d)
trap cleanup EXIT

if ((BUILD)); then
    say "docker-compose build"
    t=$(now)
    dc build >"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log"; die "build failed"; }
    measured "build" "$(((($(now) - t) + 500) / 1000)) s"
fi

say "docker-compose up -d"
t=$(now)
dc up -d >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log"; die "up failed"; }
t_up=$(now)
measured "up -d returned (ZooKeeper healthy first)" "$((t_up - t)) ms"
wait_live 1 && wait_live 2 || die "the nodes do not serve /health/live"
measured "up -d returned -> both nodes serve /health/live" "$(($(now) - t_up)) ms"
L=$(wait_leader) || die "no leader within 60 s"
measured "up -d returned -> a leader (node $L)" "$(($(now) - t_up)) ms"
wait_healthy node1 && wait_healthy node2 || die "the nodes are not (healthy): node1 $(health node1), node2 $(health node2)"
measured "up -d returned -> both containers (healthy)" "$(($(now) - t_up)) ms (health checks every 5 s)"

say "write on node 1, read on node 2"
[[ "$(put 1 hello 3 greeting)" == 200 ]] || fail "PUT greeting on node 1"
got=$(curl -fsS --max-time 3 "http://127.0.0.1:$(port 2)/v1/kv/greeting" || true)
[[ "$got" == hello ]] && say "node 2 reads greeting = $got" || fail "node 2 read '$got', not hello"

say "docker-compose exec -T node1 walship status"
if dc exec -T node1 walship status >"$WORK/status.txt" 2>&1; then
    sed 's/^/    /' "$WORK/status.txt"
else
    sed 's/^/    /' "$WORK/status.txt"
    fail "walship status in node1 exited non-zero"
fi

# A writer in the background: one write at a time, to either node in turn,
# each key written once; an acknowledged one (200) must be there at the end.
# $WORK/writes: i, HTTP status (000: no answer in 3 s), sent, answered (ms).
: >"$WORK/writes"
(
    i=0
    while :; do
        i=$((i + 1))
        t=$(now)
        code=$(put $((i % 2 + 1)) "v$i" 3 "w$i")
        echo "$i $code $t $(now)" >>"$WORK/writes"
        sleep 0.02
    done
) &
WRITER=$!
sleep 2

L=$(wait_leader) || die "no leader"
S=$(other "$L")
say "docker kill (node$L's container: the leader; SIGKILL, as docker-compose kill)"
start_prober "$S"
sleep 0.5
docker kill "$(dc ps -q node"$L")" >/dev/null
t=$(died_at node"$L")
ms=$(first_ack_after "$t" probe) || die "node $S acknowledged no write within 60 s of the kill"
stop_prober
measured "kill leader node$L -> first probe sent after its death acknowledged by node$S" "$ms ms"
say "  the probes before it: $(writes_between "$t" probe) (HTTP status; 000: refused or no answer in 0.5 s)"
measured "node$L after the kill" "$(docker inspect -f '{{.State.Status}}' "$(dc ps -q node"$L")") (restart: unless-stopped does not restart a killed container)"

say "docker-compose start node$L"
t=$(now)
dc start node"$L" >/dev/null 2>&1
wait_live "$L" || die "node $L does not come back"
measured "start node$L -> serves /health/live" "$(($(now) - t)) ms"
deadline=$(($(now) + 60000))
until [[ "$(status_json "$L" | field leader)" == "$S" ]]; do
    (($(now) < deadline)) || die "node $L does not follow node $S"
    sleep 0.05
done
measured "start node$L -> follows node$S" "$(($(now) - t)) ms"
got=$(curl -fsS --max-time 3 "http://127.0.0.1:$(port "$L")/v1/kv/greeting?stale=true" || true)
[[ "$got" == hello ]] && say "node $L's own copy: greeting = $got" || fail "node $L's own copy of greeting is '$got'"
wait_healthy node"$L" || fail "node$L not (healthy) after start"

sleep 2
say "docker-compose stop node$S (the leader; SIGTERM: hand-over)"
t=$(now)
dc stop node"$S" >"$WORK/stop.log" 2>&1
t_sig=$(stop_signal_at node"$S" "$t") || die "no stop signal of node$S in docker events"
ms=$(first_ack_after "$t_sig") || die "no write acknowledged within 60 s of the stop"
measured "stop leader node$S -> first write sent after its SIGTERM acknowledged (by node$L)" "$ms ms"
say "  the writes sent before it: $(writes_between "$t_sig") (HTTP status; 000: refused or no answer)"
measured "SIGTERM -> node$S exited" "$(($(died_at node"$S") - t_sig)) ms"
t=$(now)
dc start node"$S" >/dev/null 2>&1
wait_live "$S" || die "node $S does not come back"
deadline=$(($(now) + 60000))
until [[ "$(status_json "$S" | field leader)" == "$L" ]]; do
    (($(now) < deadline)) || die "node $S does not follow node $L"
    sleep 0.05
done
measured "start node$S -> follows node$L" "$(($(now) - t)) ms"

if ((ENSEMBLE)); then
    sleep 2
    zk_leader=""
    for z in zookeeper zookeeper2 zookeeper3; do
        mode=$(dc exec -T "$z" bash -c 'exec 3<>/dev/tcp/127.0.0.1/2181; printf srvr >&3; cat <&3' 2>/dev/null | sed -n 's/^Mode: //p')
        say "$z: ${mode:-?}"
        [[ "$mode" == leader ]] && zk_leader=$z
    done
    [[ -n "$zk_leader" ]] || die "no ZooKeeper leader found"
    say "docker kill ($zk_leader's container: the ZooKeeper leader)"
    wl=$(leader || true)
    start_prober "${wl:-1}"
    sleep 0.5
    docker kill "$(dc ps -q "$zk_leader")" >/dev/null
    t=$(died_at "$zk_leader")
    ms=$(first_ack_after "$t" probe) || die "no write acknowledged within 60 s of killing $zk_leader"
    stop_prober
    measured "kill ZooKeeper leader $zk_leader -> first probe sent after its death acknowledged by node${wl:-1}" "$ms ms"
    say "  the probes before it: $(writes_between "$t" probe) (HTTP status; 000: refused or no answer in 0.5 s)"
    n_before=$(wc -l <"$WORK/writes")
    sleep 3
    acked_meanwhile=$(awk -v n="$n_before" 'NR > n && $2 == 200' "$WORK/writes" | wc -l)
    measured "writes acknowledged in the 3 s after that, with 2 of 3 ZooKeeper servers" "$acked_meanwhile"
    ((acked_meanwhile > 0)) || fail "no writes with 2 of 3 ZooKeeper servers"
    t=$(now)
    dc start "$zk_leader" >/dev/null 2>&1
    wait_healthy "$zk_leader" || fail "$zk_leader not (healthy) after start"
    measured "start $zk_leader -> (healthy), back in the quorum" "$(($(now) - t)) ms"
fi

sleep 1
kill "$WRITER" 2>/dev/null || true
wait "$WRITER" 2>/dev/null || true
WRITER=""
acked=$(awk '$2 == 200' "$WORK/writes" | wc -l)
refused=$(awk '$2 == 503' "$WORK/writes" | wc -l)
other_codes=$(awk '$2 != 200 && $2 != 503' "$WORK/writes" | wc -l)
say "checking the $acked acknowledged writes of the background writer on both nodes"
lost=0
while read -r i code _; do
    [[ "$code" == 200 ]] || continue
    for id in 1 2; do
        got=$(curl -fsS --max-time 3 "http://127.0.0.1:$(port "$id")/v1/kv/w$i" || true)
        [[ "$got" == "v$i" ]] || { lost=$((lost + 1)); say "w$i on node $id: '$got', not v$i"; }
    done
done <"$WORK/writes"
measured "background writes" "$acked acknowledged, $refused refused (503), $other_codes other (504/timeout/connection), $lost acknowledged but missing"
((lost == 0)) || fail "$lost acknowledged writes missing"

say "docker-compose exec -T node1 walship wal inspect"
if dc exec -T node1 walship wal inspect >"$WORK/inspect.txt" 2>&1; then
    sed -n '1,12p;/^WAL segments/p;/^verdict/p' "$WORK/inspect.txt" | sed 's/^/    /'
else
    sed 's/^/    /' "$WORK/inspect.txt"
    fail "walship wal inspect exited non-zero"
fi

if ((SOAK > 0)); then
    say "docker-compose run --rm soak --cycles $SOAK"
    t=$(now)
    if dc run --rm soak --cycles "$SOAK" >"$WORK/soak.txt" 2>&1; then
        measured "soak, $SOAK cycles" "$(grep -m1 -E '^walship soak: (PASS|FAIL)' "$WORK/soak.txt") in $((($(now) - t) / 1000)) s"
        sed -n '/^walship soak: PASS/,$p' "$WORK/soak.txt" | grep -E '^  (ran|writes|failover ms|durable +ZooKeeper|linearizable|verdict) ' | sed 's/^/    /'
    else
        tail -40 "$WORK/soak.txt"
        fail "the soak failed"
    fi
fi

echo
echo "== summary"
printf '  %s\n' "${SUMMARY[@]}"
if ((FAILED)); then
    echo "  RESULT: FAIL"
    exit 1
fi
echo "  RESULT: PASS"
