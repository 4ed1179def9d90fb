#!/usr/bin/env bash
# Minos recipe "logrotate": rotate the files matching a glob now (copytruncate).
#
# Parameters (environment): MINOS_PARAM_PATH, MINOS_PARAM_KEEP, MINOS_PARAM_COMPRESS,
# MINOS_PARAM_MIN_SIZE.
#
# For each matching regular file at least min_size bytes large:
#   1. generations numbered keep and above are deleted (plain or .gz);
#   2. <file>.N and <file>.N.gz become <file>.N+1[.gz], from the oldest down;
#   3. the file is copied to <file>.1 (mode, owner and times kept) and truncated in
#      place, so the process writing it needs no signal; lines written between the copy
#      and the truncation are lost;
#   4. with compress, <file>.1 is gzipped to <file>.1.gz.
# Running it again rotates again: "now" is the point of this chore.
set -euo pipefail

log() { printf 'logrotate: %s\n' "$*"; }
die() {
    printf 'logrotate: error: %s\n' "$*" >&2
    exit 1
}

pattern=${MINOS_PARAM_PATH-}
keep=${MINOS_PARAM_KEEP-7}
compress=${MINOS_PARAM_COMPRESS-true}
min_size=${MINOS_PARAM_MIN_SIZE-1}

[[ -n $pattern ]] || die "MINOS_PARAM_PATH is required: an absolute path or glob, e.g. /var/log/myapp/*.log"
[[ $pattern == /* ]] || die "MINOS_PARAM_PATH must be absolute, not '$pattern'"
if ! [[ $keep =~ ^[0-9]{1,4}$ ]] || ((10#$keep < 1 || 10#$keep > 1000)); then
    die "MINOS_PARAM_KEEP must be an integer from 1 to 1000, not '$keep'"
fi
keep=$((10#$keep))
[[ $compress == true || $compress == false ]] ||
    die "MINOS_PARAM_COMPRESS must be true or false, not '$compress'"
if [[ $min_size =~ ^([0-9]{1,12})([kKmMgG]?)$ ]]; then
    min_bytes=$((10#${BASH_REMATCH[1]}))
    case ${BASH_REMATCH[2]} in
    k | K) min_bytes=$((min_bytes << 10)) ;;
    m | M) min_bytes=$((min_bytes << 20)) ;;
    g | G) min_bytes=$((min_bytes << 30)) ;;
    esac
else
    die "MINOS_PARAM_MIN_SIZE must be a byte count with an optional k, M or G suffix, not '$min_size'"
fi
if [[ $compress == true ]] && ! command -v gzip >/dev/null 2>&1; then
    die "compress is true but gzip is not installed"
fi

# Expand the glob: no word splitting (IFS empty), no match expands to nothing, ** recurses.
shopt -s nullglob globstar
saved_ifs=$IFS
IFS=
# shellcheck disable=SC2206 # the glob is meant to expand
matches=($pattern)
IFS=$saved_ifs

# rotate FILE: steps 1 to 4 above.
rotate() {
    local f=$1 g n i e
    for g in "$f".[0-9]*; do
        [[ ${g#"$f".} =~ ^([0-9]+)(\.gz)?$ ]] || continue
        n=$((10#${BASH_REMATCH[1]}))
        if ((n >= keep)); then
            rm -f -- "$g"
        fi
    done
    for ((i = keep - 1; i >= 1; i--)); do
        for e in "" .gz; do
            if [[ -e $f.$i$e ]]; then
                mv -f -- "$f.$i$e" "$f.$((i + 1))$e"
            fi
        done
    done
    cp -p -- "$f" "$f.1" || die "$f: cannot copy to $f.1"
    : >"$f" || die "$f: cannot truncate (its copy is $f.1)"
    if [[ $compress == true ]]; then
        gzip -f -- "$f.1" || die "$f.1: gzip failed"
    fi
}

rotated=0
small=0
for f in "${matches[@]}"; do
    name=${f##*/}
    if [[ $name =~ (\.[0-9]+|\.gz)$ ]]; then
        continue # a rotated generation or a compressed file
    fi
    if [[ -L $f ]]; then
        log "skipping $f: a symbolic link"
        continue
    fi
    if [[ ! -f $f ]]; then
        continue
    fi
    size=$(wc -c <"$f") || die "$f: cannot read"
    size=${size//[[:space:]]/}
    if ((size < min_bytes)); then
        small=$((small + 1))
        continue
    fi
    rotate "$f"
    suffix=.1
    [[ $compress == true ]] && suffix=.1.gz
    log "rotated $f ($size bytes) to $f$suffix, keeping $keep"
    rotated=$((rotated + 1))
done

if ((rotated == 0 && small == 0)); then
    printf 'logrotate: warning: no file matches %s\n' "$pattern" >&2
fi
log "$rotated file(s) rotated, $small skipped as smaller than $min_bytes bytes"
