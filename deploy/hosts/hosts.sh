#!/usr/bin/env bash
# Simulated hosts on one Linux machine: one network namespace per host, each
# with one address on a private /24, joined by veth pairs on a bridge that
# lives in a namespace of its own. Nothing is added to the root namespace (no
# interface, no route, no NAT): the hosts reach each other and nothing else.
#
#   hosts.sh [-i ID] up [HOST...]     create the hosts (default: the test layout
#                                     gw app1 app2 app3 worker pg1 pg2 redis load);
#                                     an earlier run with the same ID is removed first
#   hosts.sh [-i ID] down             kill what runs in them, remove them (idempotent)
#   hosts.sh [-i ID] exec HOST CMD... run CMD inside HOST (its own network, its own
#                                     /etc/hosts and, when present, resolv.conf)
#   hosts.sh [-i ID] addr HOST        print HOST's address
#   hosts.sh [-i ID] list             print "HOST ADDRESS NAMESPACE" per host
#   hosts.sh [-i ID] netem HOST [delay=1ms] [loss=0%]   delay/loss on HOST's link
#                                     (tc netem, both directions); netem HOST off removes it
#   hosts.sh [-i ID] link HOST up|down  plug or cut HOST's cable (the bridge side)
#   hosts.sh [-i ID] resolv HOST NAMESERVER|off   point HOST's resolv.conf somewhere
#   hosts.sh gc                       remove every run whose creating process is gone
#
# ID (default $SURGE_HOSTS_ID, else "dev") prefixes every namespace
# (surge-ID-HOST, surge-ID-net for the bridge), so parallel runs never collide;
# down and gc touch only namespaces this script recorded for an ID. State lives in
# /run/surge-hosts/ID (owner pid, host table); per-host files in /etc/netns/surge-ID-HOST/
# (ip netns exec bind-mounts them over /etc/hosts and /etc/resolv.conf).
# Needs root and iproute2. Exit status: 0, 1 on failure, 2 on usage errors.
set -euo pipefail

SUBNET=${SURGE_HOSTS_SUBNET:-10.77.0}
LAYOUT=(gw app1 app2 app3 worker pg1 pg2 redis load)
STATE_ROOT=/run/surge-hosts
id=${SURGE_HOSTS_ID:-dev}

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "hosts.sh: $*" >&2; exit 1; }
bad() { echo "hosts.sh: $*" >&2; exit 2; }

while getopts "i:h" o; do
    case $o in
    i) id=$OPTARG ;;
    *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || usage
[[ $id =~ ^[a-z0-9]{1,12}$ ]] || bad "ID must be 1-12 lowercase letters or digits (got '$id')"
cmd=$1; shift

state=$STATE_ROOT/$id
ns_of() { echo "surge-$id-$1"; }
brns="surge-$id-net"

host_addr() {
    [ -f "$state/hosts" ] || die "no hosts for ID $id (run: hosts.sh -i $id up)"
    local a
    a=$(awk -v h="$1" '$1 == h { print $2 }' "$state/hosts")
    [ -n "$a" ] || die "unknown host '$1' (have: $(awk '{printf "%s ", $1}' "$state/hosts"))"
    echo "$a"
}

# Kill every process inside a namespace (ours only), TERM then KILL.
kill_ns_pids() {
    local ns=$1 pids
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [ -n "$pids" ] || return 0
    # shellcheck disable=SC2086 # one word per pid
    kill -TERM $pids 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [ -n "$pids" ] || return 0
        sleep 0.2
    done
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
}

do_down() {
    local ns
    # Namespaces recorded for this ID, plus any surge-ID-* left by a run that
    # died before recording them.
    local list=()
    [ -f "$state/namespaces" ] && mapfile -t list <"$state/namespaces"
    while read -r ns _; do
        case $ns in "surge-$id-"*) list+=("$ns") ;; esac
    done < <(ip netns list 2>/dev/null)
    for ns in $(printf '%s\n' "${list[@]}" | sort -u); do
        [ -n "$ns" ] || continue
        kill_ns_pids "$ns"
        ip netns del "$ns" 2>/dev/null || true
        rm -rf "/etc/netns/$ns"
    done
    rm -rf "$state"
}

do_up() {
    local hosts=("$@")
    [ ${#hosts[@]} -gt 0 ] || hosts=("${LAYOUT[@]}")
    [ ${#hosts[@]} -le 200 ] || bad "at most 200 hosts"
    local h
    for h in "${hosts[@]}"; do
        [[ $h =~ ^[a-z][a-z0-9]{0,9}$ ]] || bad "host name '$h': 1-10 lowercase letters/digits"
        [ "$h" != net ] || bad "host name 'net' is reserved for the bridge"
    done
    do_down
    mkdir -p "$state"
    echo "${SURGE_HOSTS_OWNER:-$PPID}" >"$state/owner"
    : >"$state/namespaces"
    : >"$state/hosts"
    echo "$brns" >>"$state/namespaces"
    ip netns add "$brns"
    ip -n "$brns" link set lo up
    ip -n "$brns" link add br0 type bridge
    ip -n "$brns" link set br0 up
    local n=10 ns addr
    for h in "${hosts[@]}"; do
        ns=$(ns_of "$h")
        addr=$SUBNET.$n
        echo "$ns" >>"$state/namespaces"
        echo "$h $addr $ns" >>"$state/hosts"
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        # Both ends are created inside our namespaces: nothing appears in the root one.
        ip -n "$brns" link add "v-$h" type veth peer name eth0 netns "$ns"
        ip -n "$brns" link set "v-$h" master br0
        ip -n "$brns" link set "v-$h" up
        ip -n "$ns" addr add "$addr/24" dev eth0
        ip -n "$ns" link set eth0 up
        n=$((n + 1))
    done
    # Every host knows the others by name.
    for h in "${hosts[@]}"; do
        ns=$(ns_of "$h")
        mkdir -p "/etc/netns/$ns"
        {
            echo "127.0.0.1 localhost"
            awk '{ print $2, $1 }' "$state/hosts"
        } >"/etc/netns/$ns/hosts"
    done
}

do_netem() {
    local h=$1; shift
    local ns delay="" loss=""
    host_addr "$h" >/dev/null
    ns=$(ns_of "$h")
    if [ "${1:-}" = off ]; then
        ip netns exec "$ns" tc qdisc del dev eth0 root 2>/dev/null || true
        ip netns exec "$brns" tc qdisc del dev "v-$h" root 2>/dev/null || true
        return 0
    fi
    for kv in "$@"; do
        case $kv in
        delay=*) delay=${kv#delay=} ;;
        loss=*) loss=${kv#loss=} ;;
        *) bad "netem: expected delay=TIME or loss=PCT (got '$kv')" ;;
        esac
    done
    local args=()
    [ -n "$delay" ] && args+=(delay "$delay")
    [ -n "$loss" ] && args+=(loss "$loss")
    [ ${#args[@]} -gt 0 ] || bad "netem: give delay=TIME and/or loss=PCT"
    # Half the delay each way would need halving the value; instead the delay
    # applies to HOST's outgoing packets and the bridge side's packets towards
    # HOST: a round trip through this link costs 2 x delay.
    local out
    if ! out=$(ip netns exec "$ns" tc qdisc replace dev eth0 root netem "${args[@]}" 2>&1); then
        case $out in
        *"qdisc kind is unknown"*) die "netem: this kernel has no netem qdisc (sch_netem): $out" ;;
        *) die "netem: $out" ;;
        esac
    fi
    ip netns exec "$brns" tc qdisc replace dev "v-$h" root netem "${args[@]}" ||
        die "netem: cannot set the bridge side of $h"
}

do_link() {
    local h=$1 updown=${2:-}
    host_addr "$h" >/dev/null
    case $updown in
    up | down) ip -n "$brns" link set "v-$h" "$updown" ;;
    *) bad "link: expected up or down" ;;
    esac
}

do_resolv() {
    local h=$1 ns_ip=${2:-}
    host_addr "$h" >/dev/null
    local f
    f=/etc/netns/$(ns_of "$h")/resolv.conf
    case $ns_ip in
    off) rm -f "$f" ;;
    "") bad "resolv: expected NAMESERVER or off" ;;
    *) printf 'nameserver %s\noptions timeout:1 attempts:2\n' "$ns_ip" >"$f" ;;
    esac
}

do_gc() {
    [ -d "$STATE_ROOT" ] || return 0
    local d owner
    for d in "$STATE_ROOT"/*/; do
        [ -d "$d" ] || continue
        owner=$(cat "$d/owner" 2>/dev/null || echo 0)
        if [ "$owner" -gt 1 ] && kill -0 "$owner" 2>/dev/null; then
            continue
        fi
        id=$(basename "$d")
        state=$STATE_ROOT/$id
        brns="surge-$id-net"
        do_down
    done
}

[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces)"
command -v ip >/dev/null || die "needs iproute2 (ip)"

case $cmd in
up) do_up "$@" ;;
down) do_down ;;
exec)
    [ $# -ge 2 ] || bad "exec HOST CMD..."
    h=$1; shift
    host_addr "$h" >/dev/null
    exec ip netns exec "$(ns_of "$h")" "$@"
    ;;
addr) [ $# -eq 1 ] || bad "addr HOST"; host_addr "$1" ;;
list) [ -f "$state/hosts" ] && cat "$state/hosts" ;;
netem) [ $# -ge 2 ] || bad "netem HOST delay=TIME loss=PCT | netem HOST off"; do_netem "$@" ;;
link) [ $# -eq 2 ] || bad "link HOST up|down"; do_link "$@" ;;
resolv) [ $# -eq 2 ] || bad "resolv HOST NAMESERVER|off"; do_resolv "$@" ;;
gc) do_gc ;;
*) bad "unknown command '$cmd' (up, down, exec, addr, list, netem, link, resolv, gc)" ;;
esac
