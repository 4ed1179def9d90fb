#!/usr/bin/env bash
# Minos recipe "disk-cleanup": free disk space from caches and old logs.
#
# Parameters (environment): MINOS_PARAM_DRY_RUN, MINOS_PARAM_JOURNAL_MAX_SIZE,
# MINOS_PARAM_PACKAGE_CACHE, MINOS_PARAM_OLD_LOGS_DAYS.
#
# Touches only: the systemd journal (journalctl --vacuum-size), the package manager's
# download cache, and rotated log files under /var/log on the root's file system. With
# dry_run (the default) it changes nothing and prints what it would do.
set -euo pipefail

log() { printf 'disk-cleanup: %s\n' "$*"; }
die() {
    printf 'disk-cleanup: error: %s\n' "$*" >&2
    exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }

dry_run=${MINOS_PARAM_DRY_RUN-true}
journal_max_size=${MINOS_PARAM_JOURNAL_MAX_SIZE-500M}
package_cache=${MINOS_PARAM_PACKAGE_CACHE-true}
old_logs_days=${MINOS_PARAM_OLD_LOGS_DAYS-0}

[[ $dry_run == true || $dry_run == false ]] ||
    die "MINOS_PARAM_DRY_RUN must be true or false, not '$dry_run'"
[[ $package_cache == true || $package_cache == false ]] ||
    die "MINOS_PARAM_PACKAGE_CACHE must be true or false, not '$package_cache'"
if [[ -n $journal_max_size && ! $journal_max_size =~ ^[0-9]{1,12}[KMG]$ ]]; then
    die "MINOS_PARAM_JOURNAL_MAX_SIZE must be a number with suffix K, M or G (e.g. 500M), not '$journal_max_size'"
fi
if ! [[ $old_logs_days =~ ^[0-9]{1,5}$ ]]; then
    die "MINOS_PARAM_OLD_LOGS_DAYS must be a whole number of days, not '$old_logs_days'"
fi
old_logs_days=$((10#$old_logs_days))

if [[ $dry_run == false && $(id -u) != 0 ]]; then
    die "must run as root to remove files (or set dry_run to true)"
fi
if [[ $dry_run == true ]]; then
    log "dry run: nothing is removed"
fi

# act DESCRIPTION CMD...: runs CMD, or only says so in a dry run.
act() {
    local what=$1
    shift
    if [[ $dry_run == true ]]; then
        log "would $what: $*"
    else
        log "$what: $*"
        "$@"
    fi
}

usage() { du -sh -- "$1" 2>/dev/null | cut -f1 || true; }

log "disk space before:"
df -hP / /var 2>/dev/null | awk '!seen[$0]++' || true

# The journal.
if [[ -z $journal_max_size ]]; then
    log "journal: left alone (journal_max_size is empty)"
elif have journalctl && [[ -d /run/systemd/system || -d /var/log/journal ]]; then
    log "journal: $(journalctl --disk-usage 2>&1 || true)"
    act "vacuum the journal to $journal_max_size" journalctl --vacuum-size="$journal_max_size"
else
    log "journal: no systemd journal on this host"
fi

# The package cache.
if [[ $package_cache == true ]]; then
    if have apt-get; then
        log "apt cache /var/cache/apt/archives: $(usage /var/cache/apt/archives)"
        act "empty the apt cache" apt-get clean
    elif have dnf; then
        log "dnf cache /var/cache/dnf: $(usage /var/cache/dnf)"
        act "empty the dnf package cache" dnf -q clean packages
    elif have yum; then
        log "yum cache /var/cache/yum: $(usage /var/cache/yum)"
        act "empty the yum package cache" yum -q clean packages
    else
        log "package cache: no apt-get, dnf or yum"
    fi
fi

# Rotated logs. -xdev: never cross into another file system mounted under /var/log.
if ((old_logs_days > 0)); then
    if [[ -d /var/log ]]; then
        old=()
        while IFS= read -r -d '' f; do
            old+=("$f")
        done < <(find /var/log -xdev -type f \
            \( -name '*.gz' -o -name '*.xz' -o -name '*.bz2' -o -name '*.zst' \
            -o -name '*.old' -o -regex '.*\.[0-9]+' \) \
            -mtime +"$old_logs_days" -print0 2>/dev/null)
        log "rotated logs older than $old_logs_days days under /var/log: ${#old[@]}"
        for f in "${old[@]}"; do
            act "delete" rm -f -- "$f"
        done
    fi
else
    log "rotated logs: kept (old_logs_days is 0)"
fi

if [[ $dry_run == false ]]; then
    log "disk space after:"
    df -hP / /var 2>/dev/null | awk '!seen[$0]++' || true
fi
