#!/usr/bin/env bash
# Minos recipe "mysql-install": MariaDB or MySQL from the distribution, configured,
# enabled, answering and secured.
#
# Parameters (environment): MINOS_PARAM_FLAVOR, MINOS_PARAM_PORT,
# MINOS_PARAM_BIND_ADDRESS, MINOS_PARAM_ROOT_PASSWORD, MINOS_PARAM_SAVE_ROOT_CNF,
# MINOS_PARAM_INNODB_BUFFER_POOL_SIZE, MINOS_PARAM_SERVER_ID, MINOS_PARAM_SECURE.
#
# What it changes, each only when different from what is there:
#   - installs the server and client packages of the flavor;
#   - writes the drop-in 99-minos.cnf in the server's configuration directory
#     (/etc/mysql/mariadb.conf.d, /etc/mysql/mysql.conf.d or /etc/my.cnf.d), read
#     after the distribution's files, so its [mysqld] settings win;
#   - on SELinux (enforcing), labels a non-default port mysqld_port_t;
#   - enables the service, restarts it if the drop-in changed (starts it if stopped),
#     waits up to 90 s until it answers on the configured address and port;
#   - sets root@localhost's password (keeping socket authentication on MariaDB >= 10.4),
#     optionally saves it in /root/.my.cnf; removes anonymous users, remote root
#     accounts and the test database.
# Passwords never appear on a command line: SQL goes through stdin, credentials
# through a 0600 option file.
set -euo pipefail

log() { printf 'mysql-install: %s\n' "$*"; }
warn() { printf 'mysql-install: warning: %s\n' "$*" >&2; }
die() {
    printf 'mysql-install: error: %s\n' "$*" >&2
    exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }

flavor=${MINOS_PARAM_FLAVOR-mariadb}
port=${MINOS_PARAM_PORT-3306}
bind_address=${MINOS_PARAM_BIND_ADDRESS-127.0.0.1}
root_password=${MINOS_PARAM_ROOT_PASSWORD-}
save_root_cnf=${MINOS_PARAM_SAVE_ROOT_CNF-true}
pool=${MINOS_PARAM_INNODB_BUFFER_POOL_SIZE-128M}
server_id=${MINOS_PARAM_SERVER_ID-1}
secure=${MINOS_PARAM_SECURE-true}

# Parameters, checked again: they end up in configuration files and SQL.
[[ $flavor == mariadb || $flavor == mysql ]] ||
    die "MINOS_PARAM_FLAVOR must be mariadb or mysql, not '$flavor'"
if ! [[ $port =~ ^[0-9]{1,5}$ ]] || ((10#$port < 1 || 10#$port > 65535)); then
    die "MINOS_PARAM_PORT must be a TCP port from 1 to 65535, not '$port'"
fi
port=$((10#$port))
[[ $bind_address =~ ^([0-9A-Fa-f.:]+|\*)$ ]] ||
    die "MINOS_PARAM_BIND_ADDRESS must be an IP address, 0.0.0.0 or ::, not '$bind_address'"
if [[ -n $root_password ]]; then
    if ((${#root_password} < 12 || ${#root_password} > 256)) ||
        [[ $root_password == *[\'\"\\]* || $root_password == *[![:graph:]]* ]]; then
        die "MINOS_PARAM_ROOT_PASSWORD must be 12 to 256 printable characters without spaces, quotes or backslash"
    fi
fi
[[ $save_root_cnf == true || $save_root_cnf == false ]] ||
    die "MINOS_PARAM_SAVE_ROOT_CNF must be true or false, not '$save_root_cnf'"
[[ $secure == true || $secure == false ]] ||
    die "MINOS_PARAM_SECURE must be true or false, not '$secure'"
if [[ $pool == auto ]]; then
    mem_kb=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
    [[ $mem_kb =~ ^[0-9]+$ ]] || die "cannot read MemTotal from /proc/meminfo for innodb_buffer_pool_size=auto"
    pool_mb=$((mem_kb / 2048))
    ((pool_mb >= 128)) || pool_mb=128
    pool=${pool_mb}M
    log "innodb_buffer_pool_size=auto: $pool (half of $((mem_kb / 1024))M RAM)"
fi
[[ $pool =~ ^[0-9]{1,12}[KMG]?$ ]] ||
    die "MINOS_PARAM_INNODB_BUFFER_POOL_SIZE must be a size such as 512M or 4G, or auto, not '$pool'"
if ! [[ $server_id =~ ^[0-9]{1,10}$ ]] || ((10#$server_id < 1 || 10#$server_id > 4294967295)); then
    die "MINOS_PARAM_SERVER_ID must be an integer from 1 to 4294967295, not '$server_id'"
fi
server_id=$((10#$server_id))

[[ $(id -u) == 0 ]] || die "must run as root (run the task as root)"
if ! [[ -d /run/systemd/system ]] || ! have systemctl; then
    die "this recipe needs systemd"
fi

os_id=unknown
if [[ -r /etc/os-release ]]; then
    os_id=$(
        # shellcheck disable=SC1091
        . /etc/os-release
        printf '%s' "${ID:-unknown}"
    )
fi

if have apt-get; then
    pm=apt
    if [[ $flavor == mariadb ]]; then
        pkgs=(mariadb-server mariadb-client)
        other=mysql-server
        svc=mariadb
        conf_dirs=(/etc/mysql/mariadb.conf.d /etc/mysql/conf.d)
    else
        if [[ $os_id == debian ]]; then
            warn "Debian ships MariaDB only: mysql-server must come from a repository you configured (Oracle's)"
        fi
        pkgs=(mysql-server mysql-client)
        other=mariadb-server
        svc=mysql
        conf_dirs=(/etc/mysql/mysql.conf.d /etc/mysql/conf.d)
    fi
elif have dnf || have yum; then
    pm=dnf
    have dnf || pm=yum
    if [[ $flavor == mariadb ]]; then
        pkgs=(mariadb-server)
        other=mysql-server
        svc=mariadb
    else
        pkgs=(mysql-server)
        other=mariadb-server
        svc=mysqld
    fi
    conf_dirs=(/etc/my.cnf.d)
else
    die "no apt-get, dnf or yum: unsupported distribution"
fi

installed() {
    if [[ $pm == apt ]]; then
        dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q 'install ok installed'
    else
        rpm -q "$1" >/dev/null 2>&1
    fi
}

# pkg_install PKG...: installs the packages that are missing.
pkg_install() {
    local p missing=()
    for p in "$@"; do
        installed "$p" || missing+=("$p")
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

if installed "$other"; then
    die "$other is installed: switching to $flavor needs a dump and restore of the data; remove $other first or keep its flavor"
fi
pkg_install "${pkgs[@]}" || die "installing ${pkgs[*]} failed"

client=
for c in mariadb mysql; do
    if have "$c"; then
        client=$c
        break
    fi
done
admin=
for c in mariadb-admin mysqladmin; do
    if have "$c"; then
        admin=$c
        break
    fi
done
[[ -n $client && -n $admin ]] || die "the mysql client or mysqladmin is missing after installing ${pkgs[*]}"

conf_dir=
for d in "${conf_dirs[@]}"; do
    if [[ -d $d ]]; then
        conf_dir=$d
        break
    fi
done
[[ -n $conf_dir ]] || die "none of ${conf_dirs[*]} exists after installing ${pkgs[*]}"

put_file "$conf_dir/99-minos.cnf" 0644 root:root "$(
    cat <<CNF
# Managed by the Minos recipe mysql-install: rewritten on every run.
# Read after the distribution's files, so these settings win.
[mysqld]
port = $port
bind-address = $bind_address
server-id = $server_id
innodb_buffer_pool_size = $pool
CNF
)"

# SELinux: a non-default port must carry the mysqld_port_t label.
if ((port != 3306)) && have getenforce && [[ $(getenforce) == Enforcing ]]; then
    if have semanage; then
        if ! semanage port -l | grep -E '^mysqld_port_t' | grep -qw "$port"; then
            log "labelling tcp port $port mysqld_port_t for SELinux"
            semanage port -a -t mysqld_port_t -p tcp "$port" 2>/dev/null ||
                semanage port -m -t mysqld_port_t -p tcp "$port"
        fi
    else
        warn "SELinux is enforcing and semanage is missing (policycoreutils-python-utils): the server may not bind port $port"
    fi
fi

systemctl enable --quiet "$svc"
if [[ $changed == true ]]; then
    log "configuration changed: restarting $svc"
    systemctl restart "$svc" || true
elif ! systemctl is-active --quiet "$svc"; then
    log "starting $svc"
    systemctl start "$svc" || true
else
    log "configuration unchanged and $svc running: nothing to restart"
fi

host=$bind_address
case $host in
0.0.0.0 | \*) host=127.0.0.1 ;;
::) host=::1 ;;
esac
# mysqladmin ping exits 0 once the server answers, even when it refuses the login.
ready=false
for ((i = 0; i < 90; i++)); do
    if "$admin" --no-defaults --connect-timeout=2 --protocol=tcp --host="$host" --port="$port" ping >/dev/null 2>&1; then
        ready=true
        break
    fi
    sleep 1
done
if [[ $ready == false ]]; then
    systemctl status --no-pager --full "$svc" >&2 || true
    journalctl -u "$svc" -n 30 --no-pager -q >&2 || true
    die "$svc does not answer on $host:$port after 90 s"
fi
log "$svc answers on $host:$port"

# Logging in as root: through the socket with the option files root has (socket
# authentication, or /root/.my.cnf), else with root_password from a temporary 0600
# option file. --defaults-extra-file must come first.
work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT
login=()
sql() { "$client" "${login[@]}" --protocol=socket --user=root --batch --skip-column-names "$@"; }
if ! sql -e 'SELECT 1' </dev/null >/dev/null 2>&1; then
    [[ -n $root_password ]] ||
        die "cannot log in as root through the socket: give root_password (the one root@localhost has)"
    printf '[client]\npassword="%s"\n' "$root_password" >"$work/root.cnf"
    login=(--defaults-extra-file="$work/root.cnf")
    if ! sql -e 'SELECT 1' </dev/null >/dev/null 2>&1; then
        die "cannot log in as root, neither through the socket nor with the given root_password"
    fi
fi
version=$(sql -e 'SELECT VERSION()' </dev/null)
log "server version $version"

if [[ -n $root_password ]]; then
    if [[ $version == *MariaDB* ]]; then
        major_minor=$(printf '%s' "$version" | sed -E 's/^([0-9]+)\.([0-9]+).*/\1 \2/')
        read -r major minor <<<"$major_minor"
        if ((major > 10 || (major == 10 && minor >= 4))); then
            stmt="ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('$root_password')"
        else
            stmt="SET PASSWORD FOR 'root'@'localhost' = PASSWORD('$root_password')"
        fi
    else
        stmt="ALTER USER 'root'@'localhost' IDENTIFIED WITH caching_sha2_password BY '$root_password'"
    fi
    printf '%s;\nFLUSH PRIVILEGES;\n' "$stmt" | sql
    log "root@localhost has the given password"
    # From now on, log in with it (socket authentication may be gone on MySQL).
    printf '[client]\npassword="%s"\n' "$root_password" >"$work/root.cnf"
    login=(--defaults-extra-file="$work/root.cnf")

    if [[ $save_root_cnf == true ]]; then
        marker="# Written by the Minos recipe mysql-install."
        if [[ ! -e /root/.my.cnf ]] || grep -qxF -- "$marker" /root/.my.cnf; then
            put_file /root/.my.cnf 0600 root:root "$(printf '%s\n[client]\nuser=root\npassword="%s"' "$marker" "$root_password")"
        else
            warn "/root/.my.cnf exists and was not written by this recipe: left alone"
        fi
    fi
fi

if [[ $secure == true ]]; then
    # Accounts as 'user'@'host', quoted by the server itself.
    mapfile -t accounts < <(sql -e "SELECT CONCAT(QUOTE(User), '@', QUOTE(Host)) FROM mysql.user WHERE User = '' OR (User = 'root' AND Host NOT IN ('localhost', '127.0.0.1', '::1'))" </dev/null)
    for a in "${accounts[@]}"; do
        [[ -n $a ]] || continue
        log "dropping account $a (anonymous or remote root)"
        printf 'DROP USER %s;\n' "$a" | sql
    done
    if [[ -n $(sql -e "SHOW DATABASES LIKE 'test'" </dev/null) ]]; then
        log "dropping the test database"
        printf 'DROP DATABASE test;\n' | sql
    fi
    printf "DELETE FROM mysql.db WHERE Db = 'test' OR Db = 'test\\\\_%%';\nFLUSH PRIVILEGES;\n" | sql
fi

# Password-less root over TCP is open to every local user.
if "$client" --no-defaults --protocol=tcp --host="$host" --port="$port" --user=root \
    --connect-timeout=5 -e 'SELECT 1' </dev/null >/dev/null 2>&1; then
    warn "root logs in over TCP without a password: set root_password"
fi
case $bind_address in
127.* | ::1 | localhost) ;;
*) warn "$svc listens on $bind_address:$port: restrict access with a firewall and give each application its own account" ;;
esac
log "done: $svc enabled at boot, answering on $host:$port"
