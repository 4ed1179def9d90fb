#!/usr/bin/env bash
# Minos recipe "diagnostics": a read-only snapshot of the host's health on stdout.
#
# Parameters (environment): MINOS_PARAM_LINES, MINOS_PARAM_TOP.
# Changes nothing. Works as any user and on minimal systems: each section notes a
# missing tool, a refused read or a command that failed or hung (15 s limit) and goes
# on. Exits 0 unless a parameter is wrong (exit 2).
set -euo pipefail

die() {
    printf 'diagnostics: error: %s\n' "$*" >&2
    exit 2
}

lines=${MINOS_PARAM_LINES-50}
top=${MINOS_PARAM_TOP-10}
if ! [[ $lines =~ ^[0-9]{1,5}$ ]] || ((10#$lines < 1 || 10#$lines > 10000)); then
    die "MINOS_PARAM_LINES must be an integer from 1 to 10000, not '$lines'"
fi
if ! [[ $top =~ ^[0-9]{1,4}$ ]] || ((10#$top < 1 || 10#$top > 1000)); then
    die "MINOS_PARAM_TOP must be an integer from 1 to 1000, not '$top'"
fi
lines=$((10#$lines))
top=$((10#$top))

have() { command -v "$1" >/dev/null 2>&1; }

section() { printf '\n== %s ==\n' "$1"; }

note() { printf '(%s)\n' "$*"; }

# run CMD [ARG...]: runs an external command with a time limit, stderr to stdout; a
# failure is noted, never fatal.
run() {
    if ! have "$1"; then
        note "$1: not installed"
        return 0
    fi
    local rc=0
    if have timeout; then
        timeout 15 "$@" 2>&1 || rc=$?
    else
        "$@" 2>&1 || rc=$?
    fi
    if ((rc == 124)) && have timeout; then
        note "$1: no answer within 15 s"
    elif ((rc != 0)); then
        note "$1: exited with status $rc"
    fi
    return 0
}

# tail_of N TEXT: the last N lines of TEXT.
tail_of() { printf '%s\n' "$2" | tail -n "$1"; }

# first_of N CMD [ARG...]: the first N lines of a command's output (a closed pipe is
# not a failure).
first_of() {
    local n=$1
    shift
    { run "$@"; } | head -n "$n" || true
}

printf 'diagnostics of %s at %s, as %s\n' \
    "$(cat /proc/sys/kernel/hostname 2>/dev/null || uname -n)" \
    "$(date -u '+%Y-%m-%dT%H:%M:%SZ')" \
    "$(id -un 2>/dev/null || id -u)"

section "host"
run uname -a
if [[ -r /etc/os-release ]]; then
    # A subshell: os-release's variables stay out of this script.
    (
        # shellcheck disable=SC1091
        . /etc/os-release
        printf 'os: %s\n' "${PRETTY_NAME:-${NAME:-unknown}}"
    )
else
    note "/etc/os-release: not readable"
fi
if have systemd-detect-virt; then
    printf 'virtualization: %s\n' "$(systemd-detect-virt 2>/dev/null || true)"
fi
if have nproc; then
    printf 'cpus: %s\n' "$(nproc)"
fi

section "uptime and load"
if have uptime; then
    run uptime
else
    printf 'uptime (s), idle (s): %s\n' "$(cat /proc/uptime 2>/dev/null || echo unknown)"
    printf 'load 1/5/15 min, runnable/total, last pid: %s\n' \
        "$(cat /proc/loadavg 2>/dev/null || echo unknown)"
fi

section "memory"
if have free; then
    run free -m
else
    first_of 20 grep -E '^(MemTotal|MemFree|MemAvailable|Buffers|Cached|SwapTotal|SwapFree|Dirty):' /proc/meminfo
fi

section "pressure"
if [[ -r /proc/pressure/cpu ]]; then
    for r in cpu memory io; do
        if [[ -r /proc/pressure/$r ]]; then
            while IFS= read -r l; do printf '%-6s %s\n' "$r" "$l"; done </proc/pressure/$r
        fi
    done
else
    note "no pressure stall information (kernel without PSI)"
fi

section "disk space"
if have df; then
    # GNU df: leave out in-memory file systems; others (busybox) lack -x.
    if ! timeout 15 df -hP -x tmpfs -x devtmpfs -x squashfs 2>/dev/null; then
        run df -h
    fi
    section "disk inodes"
    if ! timeout 15 df -iP -x tmpfs -x devtmpfs -x squashfs 2>/dev/null; then
        run df -i
    fi
else
    note "df: not installed"
fi

section "top processes by cpu"
if have ps && ps -eo pid= >/dev/null 2>&1; then
    first_of $((top + 1)) ps -eo pid,user,%cpu,%mem,rss,etime,comm --sort=-%cpu
    section "top processes by memory"
    first_of $((top + 1)) ps -eo pid,user,%cpu,%mem,rss,etime,comm --sort=-rss
else
    note "ps: not installed or without -eo (busybox); the first processes instead"
    first_of $((top + 1)) ps
fi

section "kernel messages"
if have dmesg && out=$(dmesg -T 2>/dev/null || dmesg 2>&1); then
    tail_of "$lines" "$out"
elif have journalctl && out=$(journalctl -k -b -q --no-pager -n "$lines" 2>&1) && [[ -n $out ]]; then
    printf '%s\n' "$out"
else
    note "kernel messages: not readable by this user (dmesg_restrict) or no dmesg"
fi

section "failed units"
if [[ -d /run/systemd/system ]] && have systemctl; then
    out=$(timeout 15 systemctl --failed --no-pager --no-legend --plain 2>&1) || true
    if [[ -n $out ]]; then printf '%s\n' "$out"; else echo "(none)"; fi
else
    note "not a systemd host"
fi

section "recent errors"
if have journalctl; then
    out=$(timeout 15 journalctl -p err -b -q --no-pager -n "$lines" 2>&1) || true
    if [[ -n $out ]]; then printf '%s\n' "$out"; else echo "(none visible to this user)"; fi
else
    note "journalctl: not installed"
fi

section "listening sockets"
if [[ $(id -u) != 0 ]]; then
    note "not root: processes are shown only for this user's sockets"
fi
if have ss; then
    run ss -tulnp
elif have netstat; then
    run netstat -tulnp
else
    note "neither ss nor netstat; raw listening TCP sockets from /proc/net/tcp{,6} (state 0A)"
    for f in /proc/net/tcp /proc/net/tcp6; do
        if [[ -r $f ]]; then
            awk 'NR > 1 && $4 == "0A" { print FILENAME, $2 }' "$f" || true
        fi
    done
fi

section "network addresses"
if have ip; then
    run ip -brief address
else
    note "ip: not installed"
fi

printf '\n== end ==\n'
