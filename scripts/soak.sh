#!/usr/bin/env bash
# walship: the die-and-reborn soak. A thin wrapper around `walship soak`:
# installs ZooKeeper if it is missing (zk/zk.sh install; needs root or sudo),
# builds the soak tool and the node binary (`cargo build -p walship-soak -p
# walship`, with --release in release; only the tool when --bin names a node
# binary), and execs
#
#   walship-soak [flags]      (the same as `walship soak [flags]`)
#
# with every flag but --release passed through. The common ones:
#
#   --cycles N         fault cycles (default 12, about a minute)
#   --duration 2m      run this long instead (90s, 2m, 1h)
#   --clients N        concurrent workload clients (default 8)
#   --keys N           key space (default 32)
#   --seed S           reproduce a fault sequence and its parameters (printed at start)
#   --kinds a,b        only these faults (default all). Single: kill-leader,
#                      kill-leader-wipe, kill-follower, kill-follower-wipe, freeze-leader,
#                      zk-restart, cut, zk-cut-leader, zk-cut-follower, power-loss-leader,
#                      power-loss-follower, stall-leader. Two at once: zk-cut-leader+cut,
#                      zk-cut-leader+kill-both+wipe, zk-cut-leader+kill-follower,
#                      power-loss-both, stall-leader+kill-follower, freeze-leader+zk-cut.
#                      With --ensemble also: zk-kill-leader, zk-kill-follower,
#                      zk-quorum-loss, zk-freeze-leader, zk-kill-leader+kill-leader,
#                      zk-kill-follower+kill-leader, zk-quorum-loss+kill-leader,
#                      zk-freeze-leader+freeze-leader (zk-restart is then left out).
#                      Groups: all, single, combined, classic (the first seven), zk
#   --ensemble         ZooKeeper as a 3-server ensemble on loopback (the production
#                      shape), with the ZooKeeper faults above
#   --run-dir DIR      data and logs (default ./.walship-soak)
#   --history FILE     the history, JSON Lines (default <run-dir>/history.jsonl)
#   --zk HOST:PORT     use an existing ZooKeeper instead of starting one
#   --bin PATH         a prebuilt walship binary (no build)
#   --workload ledger  the nodes run examples/ledger.rs (built too, unless
#                      --ledger-bin PATH names one); clients send deposits,
#                      withdrawals and transfers, checked for exactly once
#   --ledger-retries plain   the comparison: re-send without a session
#   --release          build and run the release binary (for long runs)
#
# `walship soak --help` lists them all. Exit status: 0 pass, 1 a lost or wrong
# acknowledged write, a non-linearizable history, a stall or a crash, 2 bad
# flags or unreachable --zk, 130/143 interrupted (everything it started is
# stopped first, and the summary so far printed).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

BIN=""
LEDGER=0
LEDGER_BIN=0
OWN_ZK=1
RELEASE=0
ARGS=()
prev=""
for arg in "$@"; do
    if [[ "$arg" == --release ]]; then
        RELEASE=1
        continue
    fi
    ARGS+=("$arg")
    case "$arg" in
        -h | --help)
            sed -n '2,42p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        --bin=*) BIN="${arg#*=}" ;;
        --zk | --zk=*) OWN_ZK=0 ;;
        --workload=ledger) LEDGER=1 ;;
        --ledger-bin | --ledger-bin=*) LEDGER_BIN=1 ;;
    esac
    [[ "$prev" == --bin ]] && BIN="$arg"
    [[ "$prev" == --workload && "$arg" == ledger ]] && LEDGER=1
    prev="$arg"
done

if ((OWN_ZK)); then
    "$ROOT/zk/zk.sh" install >&2
fi

command -v cargo >/dev/null 2>&1 || { echo "soak.sh: cargo not found (install Rust: https://rustup.rs)" >&2; exit 1; }
# The soak is its own binary (tools/soak); it starts nodes from the walship
# binary beside it, or from --bin.
PROFILE=debug
BUILD=(cargo build -p walship-soak)
if ((RELEASE)); then
    PROFILE=release
    BUILD+=(--release)
fi
[[ -z "$BIN" ]] && BUILD+=(-p walship)
# The ledger example, beside the soak tool where it looks for it; naming a
# target means naming the binaries too.
if ((LEDGER && !LEDGER_BIN)); then
    BUILD+=(-p walship --bins --example ledger)
fi
(cd "$ROOT" && "${BUILD[@]}") >&2
SOAK="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE/walship-soak"
if [[ -n "$BIN" ]]; then
    [[ -x "$BIN" ]] || { echo "soak.sh: walship binary not found or not executable: $BIN" >&2; exit 2; }
fi

exec "$SOAK" ${ARGS[@]+"${ARGS[@]}"}
