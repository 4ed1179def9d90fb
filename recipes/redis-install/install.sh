#!/usr/bin/env bash
# Minos recipe "redis-install": Redis from the distribution, configured the
# recommended way, enabled and answering.
#
# Parameters (environment): MINOS_PARAM_PORT, MINOS_PARAM_BIND, MINOS_PARAM_MAXMEMORY,
# MINOS_PARAM_MAXMEMORY_POLICY, MINOS_PARAM_REQUIREPASS, MINOS_PARAM_APPENDONLY.
#
# What it changes, each only when different from what is there:
#   - installs redis-server (apt) or redis (dnf/yum);
#   - writes <redis.conf dir>/redis-minos.conf (root:redis 0640) and appends one
#     `include` line for it to the end of the distribution's redis.conf, so the
#     distribution's file stays as packaged and our settings win;
#   - writes /etc/sysctl.d/60-minos-redis.conf (vm.overcommit_memory = 1) and applies it;
#   - on SELinux (enforcing), labels a non-default port redis_port_t;
#   - enables the service, restarts it if its configuration changed (starts it if not
#     running), then waits up to 30 s for PING to answer PONG.
set -euo pipefail

log() { printf 'redis-install: %s\n' "$*"; }
warn() { printf 'redis-install: warning: %s\n' "$*" >&2; }
die() {
    printf 'redis-install: error: %s\n' "$*" >&2
    exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }

port=${MINOS_PARAM_PORT-6379}
bind=${MINOS_PARAM_BIND-127.0.0.1}
maxmemory=${MINOS_PARAM_MAXMEMORY-}
policy=${MINOS_PARAM_MAXMEMORY_POLICY-noeviction}
requirepass=${MINOS_PARAM_REQUIREPASS-}
appendonly=${MINOS_PARAM_APPENDONLY-true}

# Parameters, checked again: they end up in a configuration file.
if ! [[ $port =~ ^[0-9]{1,5}$ ]] || ((10#$port < 1 || 10#$port > 65535)); then
    die "MINOS_PARAM_PORT must be a TCP port from 1 to 65535, not '$port'"
fi
port=$((10#$port))
read -r -a bind_addrs <<<"$bind"
((${#bind_addrs[@]} > 0)) || die "MINOS_PARAM_BIND is empty: give at least one address"
for a in "${bind_addrs[@]}"; do
    [[ $a =~ ^-?([0-9A-Fa-f.:]+|\*)$ ]] || die "MINOS_PARAM_BIND: '$a' is not an IP address"
done
[[ -n $maxmemory ]] || die "MINOS_PARAM_MAXMEMORY is required, e.g. 2gb (0 for no limit)"
maxmemory=${maxmemory,,}
[[ $maxmemory =~ ^[0-9]{1,15}(k|kb|m|mb|g|gb)?$ ]] ||
    die "MINOS_PARAM_MAXMEMORY must be a size such as 512mb or 2gb, not '$maxmemory'"
case $policy in
noeviction | allkeys-lru | allkeys-lfu | allkeys-random | volatile-lru | volatile-lfu | volatile-random | volatile-ttl) ;;
*) die "MINOS_PARAM_MAXMEMORY_POLICY '$policy' is not a Redis eviction policy" ;;
esac
if [[ $requirepass == *[[:cntrl:]]* ]] || ((${#requirepass} > 512)); then
    die "MINOS_PARAM_REQUIREPASS must be at most 512 characters without control characters"
fi
[[ $appendonly == true || $appendonly == false ]] ||
    die "MINOS_PARAM_APPENDONLY must be true or false, not '$appendonly'"

[[ $(id -u) == 0 ]] || die "must run as root (run the task as root)"
if ! [[ -d /run/systemd/system ]] || ! have systemctl; then
    die "this recipe needs systemd"
fi

if have apt-get; then
    pm=apt
    pkg=redis-server
    svc=redis-server
elif have dnf; then
    pm=dnf
    pkg=redis
    svc=redis
elif have yum; then
    pm=yum
    pkg=redis
    svc=redis
else
    die "no apt-get, dnf or yum: unsupported distribution"
fi

# pkg_install PKG...: installs the packages that are missing.
pkg_install() {
    local p missing=()
    for p in "$@"; do
        if [[ $pm == apt ]]; then
            dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
        else
            rpm -q "$p" >/dev/null 2>&1 || missing+=("$p")
        fi
    done
    ((${#missing[@]} > 0)) || return 0
    log "installing ${missing[*]} with $pm"
    if [[ $pm == apt ]]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
    else
        "$pm" install -y -q "${missing[@]}"
    fi
}

changed=false
# put_file PATH MODE OWNER TEXT: replaces PATH with TEXT (plus a newline) when the
# content differs (atomic rename), and always sets the mode and owner. Sets
# changed=true when it wrote. Not in a pipeline: that would lose `changed`.
put_file() {
    local path=$1 mode=$2 owner=$3 text=$4 tmp
    tmp=$(mktemp "$path.XXXXXX")
    printf '%s\n' "$text" >"$tmp"
    chmod "$mode" "$tmp"
    chown "$owner" "$tmp"
    if [[ -f $path ]] && cmp -s "$tmp" "$path"; then
        rm -f "$tmp"
        chmod "$mode" "$path"
        chown "$owner" "$path"
    else
        mv -f "$tmp" "$path"
        log "wrote $path"
        changed=true
    fi
}

if ! pkg_install "$pkg"; then
    die "installing $pkg failed (RHEL 7 needs EPEL; RHEL 10 and recent Fedora ship Valkey instead of Redis)"
fi
have redis-server || die "redis-server is not on PATH after installing $pkg"
log "$(redis-server --version)"

main_conf=
for c in /etc/redis/redis.conf /etc/redis.conf; do
    if [[ -f $c ]]; then
        main_conf=$c
        break
    fi
done
[[ -n $main_conf ]] || die "no /etc/redis/redis.conf or /etc/redis.conf after installing $pkg"
dropin=${main_conf%.conf}-minos.conf
group=redis
getent group "$group" >/dev/null || die "the package did not create the group '$group'"

# Redis config quoting: "..." with \\ and \" escapes.
quoted_pass=${requirepass//\\/\\\\}
quoted_pass=${quoted_pass//\"/\\\"}
conf=$(
    echo "# Managed by the Minos recipe redis-install: rewritten on every run."
    echo "# Included from the end of $main_conf, so these settings win."
    echo "port $port"
    echo "bind ${bind_addrs[*]}"
    echo "maxmemory $maxmemory"
    echo "maxmemory-policy $policy"
    if [[ $appendonly == true ]]; then
        echo "appendonly yes"
        echo "appendfsync everysec"
    else
        echo "appendonly no"
    fi
    if [[ -n $requirepass ]]; then
        printf 'requirepass "%s"\n' "$quoted_pass"
    fi
)
put_file "$dropin" 0640 "root:$group" "$conf"

include_line="include $dropin"
if ! grep -qxF -- "$include_line" "$main_conf"; then
    log "appending '$include_line' to $main_conf"
    printf '\n# Added by the Minos recipe redis-install: keep it last.\n%s\n' "$include_line" >>"$main_conf"
    changed=true
elif [[ $(grep -v '^[[:space:]]*\(#\|$\)' "$main_conf" | tail -n 1) != "$include_line" ]]; then
    warn "$main_conf has settings after '$include_line'; they override the recipe's"
fi

# The kernel: Redis forks to save; without overcommit a save can fail under memory use.
put_file /etc/sysctl.d/60-minos-redis.conf 0644 root:root \
    "$(printf '# Managed by the Minos recipe redis-install.\nvm.overcommit_memory = 1')"
if [[ $(cat /proc/sys/vm/overcommit_memory 2>/dev/null || echo unknown) != 1 ]]; then
    sysctl -q -w vm.overcommit_memory=1 || warn "could not set vm.overcommit_memory=1 now (a container?); it applies at next boot"
fi
thp=/sys/kernel/mm/transparent_hugepage/enabled
if [[ -r $thp && $(cat "$thp") == *"[always]"* ]]; then
    warn "transparent huge pages are 'always': Redis 6.2 and later turn them off for their own process (disable-thp yes); with an older Redis set transparent_hugepage=madvise on the kernel command line to avoid latency spikes and memory bloat"
fi

# SELinux: a non-default port must carry the redis_port_t label.
if ((port != 6379)) && have getenforce && [[ $(getenforce) == Enforcing ]]; then
    if have semanage; then
        if ! semanage port -l | grep -E '^redis_port_t' | grep -qw "$port"; then
            log "labelling tcp port $port redis_port_t for SELinux"
            semanage port -a -t redis_port_t -p tcp "$port" 2>/dev/null ||
                semanage port -m -t redis_port_t -p tcp "$port"
        fi
    else
        warn "SELinux is enforcing and semanage is missing (policycoreutils-python-utils): Redis may not bind port $port"
    fi
fi

local_only=true
for a in "${bind_addrs[@]}"; do
    case ${a#-} in
    127.* | ::1) ;;
    *) local_only=false ;;
    esac
done
if [[ $local_only == false && -z $requirepass ]]; then
    warn "Redis listens on ${bind_addrs[*]} without a password: anyone who reaches port $port can read, write and reconfigure it; set requirepass and a firewall"
fi
if [[ $maxmemory == 0 ]]; then
    warn "maxmemory is 0: Redis may use all the memory of the host"
fi

systemctl enable --quiet "$svc"
if [[ $changed == true ]]; then
    log "configuration changed: restarting $svc"
    systemctl restart "$svc"
elif ! systemctl is-active --quiet "$svc"; then
    log "starting $svc"
    systemctl start "$svc"
else
    log "configuration unchanged and $svc running: nothing to restart"
fi

host=${bind_addrs[0]#-}
case $host in
0.0.0.0 | \*) host=127.0.0.1 ;;
::) host=::1 ;;
esac
have redis-cli || die "redis-cli is missing: cannot check the server"
for ((i = 0; i < 30; i++)); do
    # The password goes through the environment, never the command line.
    if [[ $(
        if [[ -n $requirepass ]]; then export REDISCLI_AUTH=$requirepass; fi
        redis-cli -h "$host" -p "$port" ping 2>/dev/null
    ) == PONG ]]; then
        log "redis answers PONG on $host:$port; enabled at boot"
        exit 0
    fi
    sleep 1
done
systemctl status --no-pager --full "$svc" >&2 || true
die "redis does not answer PING on $host:$port after 30 s"
