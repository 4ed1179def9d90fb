#!/usr/bin/env bash
# Minos recipe "kafka-install": Apache Kafka in KRaft mode, as a systemd service.
#
# Parameters (environment): MINOS_PARAM_URL, MINOS_PARAM_SHA512,
# MINOS_PARAM_INSTALL_DIR, MINOS_PARAM_DATA_DIR, MINOS_PARAM_NODE_ID,
# MINOS_PARAM_CONTROLLER_QUORUM_VOTERS, MINOS_PARAM_CLUSTER_ID, MINOS_PARAM_LISTENERS,
# MINOS_PARAM_ADVERTISED_LISTENERS, MINOS_PARAM_HEAP.
#
# What it changes, each only when different from what is there:
#   - installs a Java runtime >= 17 (openjdk 21 or 17 headless) and curl;
#   - creates the system user and group kafka;
#   - downloads, verifies and unpacks the release into <install_dir>/<release>
#     (root-owned), points <install_dir>/current at it;
#   - writes /etc/kafka/server.properties (root:kafka 0640) and
#     /etc/systemd/system/kafka.service;
#   - creates <data_dir> and /var/log/kafka (kafka:kafka 0750);
#   - formats <data_dir> once (meta.properties marks it formatted; a different
#     cluster_id then is an error, never a reformat);
#   - enables kafka.service, restarts it when the release, the configuration or the
#     unit changed (starts it if stopped), and waits up to 120 s for the broker port.
set -euo pipefail

log() { printf 'kafka-install: %s\n' "$*"; }
warn() { printf 'kafka-install: warning: %s\n' "$*" >&2; }
die() {
    printf 'kafka-install: error: %s\n' "$*" >&2
    exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }

url=${MINOS_PARAM_URL-https://archive.apache.org/dist/kafka/4.0.0/kafka_2.13-4.0.0.tgz}
sha512=${MINOS_PARAM_SHA512-}
install_dir=${MINOS_PARAM_INSTALL_DIR-/opt/kafka}
data_dir=${MINOS_PARAM_DATA_DIR-/var/lib/kafka}
node_id=${MINOS_PARAM_NODE_ID-1}
voters=${MINOS_PARAM_CONTROLLER_QUORUM_VOTERS-}
cluster_id=${MINOS_PARAM_CLUSTER_ID-}
listeners=${MINOS_PARAM_LISTENERS-PLAINTEXT://:9092,CONTROLLER://:9093}
advertised=${MINOS_PARAM_ADVERTISED_LISTENERS-}
heap=${MINOS_PARAM_HEAP-1G}

# Parameters, checked again: they end up in configuration files and a unit.
[[ $url =~ ^(https?|file)://[^[:space:]\"\'\\]+\.(tgz|tar\.gz)$ ]] ||
    die "MINOS_PARAM_URL must be an https, http or file URL of a .tgz or .tar.gz, not '$url'"
release=${url##*/}
release=${release%.tgz}
release=${release%.tar.gz}
[[ $release =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "MINOS_PARAM_URL: '$release' is not a usable release name"
sha512=${sha512//[[:space:]]/}
sha512=${sha512,,}
if [[ -n $sha512 && ! $sha512 =~ ^[0-9a-f]{128}$ ]]; then
    die "MINOS_PARAM_SHA512 must be 128 hexadecimal digits"
fi
# check_path VARIABLE VALUE: an absolute path, safe in a unit file and a properties file.
check_path() {
    if ! [[ $2 =~ ^/[A-Za-z0-9._/-]*[A-Za-z0-9._-]$ ]] || [[ /$2/ == */../* || /$2/ == */./* ]]; then
        die "$1 must be an absolute path of letters, digits, . _ - and /, not '$2'"
    fi
}
check_path MINOS_PARAM_INSTALL_DIR "$install_dir"
check_path MINOS_PARAM_DATA_DIR "$data_dir"
if ! [[ $node_id =~ ^[0-9]{1,10}$ ]] || ((10#$node_id > 2147483647)); then
    die "MINOS_PARAM_NODE_ID must be an integer from 0 to 2147483647, not '$node_id'"
fi
node_id=$((10#$node_id))
host_re='([A-Za-z0-9.-]*|\[[0-9A-Fa-f:]+\])'
listener_re="[A-Z][A-Z0-9_]*://$host_re:[0-9]{1,5}"
[[ $listeners =~ ^$listener_re(,$listener_re)*$ ]] ||
    die "MINOS_PARAM_LISTENERS must be NAME://host:port,..., not '$listeners'"
if [[ -n $advertised && ! $advertised =~ ^$listener_re(,$listener_re)*$ ]]; then
    die "MINOS_PARAM_ADVERTISED_LISTENERS must be NAME://host:port,..., not '$advertised'"
fi
controller_port=
broker_name=
broker_host=
broker_port=
IFS=, read -r -a entries <<<"$listeners"
for e in "${entries[@]}"; do
    name=${e%%://*}
    hp=${e#*://}
    p=${hp##*:}
    ((10#$p >= 1 && 10#$p <= 65535)) || die "MINOS_PARAM_LISTENERS: port $p of $name is not a TCP port"
    if [[ $name == CONTROLLER ]]; then
        controller_port=$((10#$p))
    elif [[ -z $broker_port ]]; then
        broker_name=$name
        broker_port=$((10#$p))
        broker_host=${hp%:*}
    fi
done
[[ -n $controller_port ]] || die "MINOS_PARAM_LISTENERS needs a CONTROLLER listener (each node is a controller)"
[[ -n $broker_port ]] || die "MINOS_PARAM_LISTENERS needs a broker listener besides CONTROLLER"
if [[ -z $voters ]]; then
    voters="$node_id@localhost:$controller_port"
fi
voter_re='[0-9]{1,10}@([A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\]):[0-9]{1,5}'
[[ $voters =~ ^$voter_re(,$voter_re)*$ ]] ||
    die "MINOS_PARAM_CONTROLLER_QUORUM_VOTERS must be id@host:port,..., not '$voters'"
IFS=, read -r -a voter_list <<<"$voters"
nodes=${#voter_list[@]}
[[ ,$voters, == *",$node_id@"* ]] ||
    die "node_id $node_id is not among the controller_quorum_voters ($voters): every node is a controller"
if [[ -n $cluster_id && ! $cluster_id =~ ^[A-Za-z0-9_-]{22}$ ]]; then
    die "MINOS_PARAM_CLUSTER_ID must be 22 characters of A-Z a-z 0-9 _ - (kafka-storage.sh random-uuid), not '$cluster_id'"
fi
if [[ -z $cluster_id ]] && ((nodes > 1)); then
    die "cluster_id is required with several controllers: generate one with kafka-storage.sh random-uuid and give the same to every node"
fi
[[ $heap =~ ^[0-9]{1,6}[mMgG]$ ]] || die "MINOS_PARAM_HEAP must be a size such as 1G or 512M, not '$heap'"

[[ $(id -u) == 0 ]] || die "must run as root (run the task as root)"
if ! [[ -d /run/systemd/system ]] || ! have systemctl; then
    die "this recipe needs systemd"
fi

if have apt-get; then
    pm=apt
    java_pkgs=(openjdk-21-jre-headless openjdk-17-jre-headless)
elif have dnf; then
    pm=dnf
    java_pkgs=(java-21-openjdk-headless java-17-openjdk-headless)
elif have yum; then
    pm=yum
    java_pkgs=(java-21-openjdk-headless java-17-openjdk-headless)
else
    die "no apt-get, dnf or yum: unsupported distribution"
fi

apt_updated=false
# pkg_install PKG...: installs the packages that are missing; fails if one does not exist.
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
        if [[ $apt_updated == false ]]; then
            apt-get update -q
            apt_updated=true
        fi
        apt-get install -y -q --no-install-recommends "${missing[@]}"
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

# java_major JAVA: the feature version of a java binary (8 for 1.8.0_x), or 0.
java_major() {
    local v a b
    v=$("$1" -version 2>&1 | sed -nE '/version "/{s/.*version "([0-9]+)(\.([0-9]+))?.*/\1 \3/p;q}') || true
    read -r a b <<<"${v:-0 0}"
    if [[ $a == 1 ]]; then a=${b:-0}; fi
    printf '%s' "${a:-0}"
}

# best_java: the JAVA_HOME of the newest installed java >= 17, or nothing.
best_java() {
    local j home major best='' best_major=0
    for j in /usr/lib/jvm/*/bin/java; do
        [[ -x $j ]] || continue
        home=$(readlink -f "${j%/bin/java}")
        major=$(java_major "$j")
        if ((major >= 17 && major > best_major)); then
            best=$home
            best_major=$major
        fi
    done
    printf '%s' "$best"
}

# Java.
java_home=$(best_java)
if [[ -z $java_home ]]; then
    for p in "${java_pkgs[@]}"; do
        if pkg_install "$p"; then
            break
        fi
        warn "$p is not available here; trying the next one"
    done
    java_home=$(best_java)
    [[ -n $java_home ]] || die "no Java 17 or later could be installed (tried ${java_pkgs[*]})"
fi
log "Java $(java_major "$java_home/bin/java") at $java_home"

# Download tools.
if [[ $url != file://* ]] && ! have curl; then
    pkg_install curl ca-certificates || die "installing curl failed"
fi

# The user.
if ! getent group kafka >/dev/null; then
    groupadd --system kafka
fi
if ! getent passwd kafka >/dev/null; then
    nologin=$(command -v nologin || echo /bin/false)
    useradd --system --gid kafka --home-dir "$data_dir" --no-create-home --shell "$nologin" kafka
    log "created the system user kafka"
fi

# The release.
home=$install_dir/$release
mkdir -p "$install_dir"
if [[ -x $home/bin/kafka-server-start.sh ]]; then
    log "$release is already in $home"
else
    work=$(mktemp -d "$install_dir/.download.XXXXXX")
    trap 'rm -rf -- "$work"' EXIT
    fetch() { curl --fail --silent --show-error --location --retry 3 --connect-timeout 20 -o "$2" "$1"; }
    log "downloading $url"
    fetch "$url" "$work/release.tgz" || die "download of $url failed"
    if [[ -z $sha512 ]]; then
        if fetch "$url.sha512" "$work/release.sha512" 2>/dev/null; then
            # Either "file: HEX HEX ..." (gpg --print-md) or "hex  file" (sha512sum).
            text=$(tr -d '\r\n' <"$work/release.sha512")
            if [[ $text == *:* ]]; then text=${text#*:}; else text=${text%%[[:space:]]*}; fi
            sha512=${text//[[:space:]]/}
            sha512=${sha512,,}
            [[ $sha512 =~ ^[0-9a-f]{128}$ ]] || die "$url.sha512 does not hold a SHA-512"
            warn "no sha512 given: checking against $url.sha512 from the same server, which only detects corruption; give sha512 to detect tampering"
        else
            warn "no sha512 given and $url.sha512 cannot be fetched: the tarball is NOT verified"
        fi
    fi
    if [[ -n $sha512 ]]; then
        actual=$(sha512sum "$work/release.tgz")
        actual=${actual%% *}
        [[ $actual == "$sha512" ]] ||
            die "SHA-512 mismatch for $url: expected $sha512, got $actual"
        log "SHA-512 verified"
    fi
    mkdir "$work/unpacked"
    tar -xzf "$work/release.tgz" -C "$work/unpacked" --no-same-owner ||
        die "$url: not a valid gzip tarball"
    shopt -s nullglob dotglob
    top=("$work"/unpacked/*)
    shopt -u nullglob dotglob
    if ((${#top[@]} != 1)) || [[ ! -x ${top[0]}/bin/kafka-server-start.sh ]]; then
        die "$url: not a Kafka release (expected one directory with bin/kafka-server-start.sh)"
    fi
    chown -R root:root "${top[0]}"
    chmod -R go-w "${top[0]}"
    mv -T "${top[0]}" "$home"
    log "installed $release in $home"
fi
if [[ $(readlink "$install_dir/current" 2>/dev/null || true) != "$home" ]]; then
    ln -sfn "$home" "$install_dir/current"
    log "$install_dir/current -> $home"
    changed=true
fi

# Directories.
install -d -m 0750 -o kafka -g kafka "$data_dir" /var/log/kafka
install -d -m 0755 -o root -g root /etc/kafka

# Configuration: replication as safe as the number of nodes allows.
rf=$((nodes < 3 ? nodes : 3))
min_isr=$((rf >= 3 ? 2 : 1))
put_file /etc/kafka/server.properties 0640 root:kafka "$(
    cat <<PROPS
# Managed by the Minos recipe kafka-install: rewritten on every run.
process.roles=broker,controller
node.id=$node_id
controller.quorum.voters=$voters
listeners=$listeners
${advertised:+advertised.listeners=$advertised}
inter.broker.listener.name=$broker_name
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL
log.dirs=$data_dir
num.partitions=1
default.replication.factor=$rf
min.insync.replicas=$min_isr
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$min_isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$min_isr
log.retention.hours=168
PROPS
)"

put_file /etc/systemd/system/kafka.service 0644 root:root "$(
    cat <<UNIT
# Managed by the Minos recipe kafka-install: rewritten on every run.
[Unit]
Description=Apache Kafka (KRaft)
Documentation=https://kafka.apache.org/documentation/
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
User=kafka
Group=kafka
Environment=JAVA_HOME=$java_home
Environment="KAFKA_HEAP_OPTS=-Xms$heap -Xmx$heap"
Environment=LOG_DIR=/var/log/kafka
ExecStart=$install_dir/current/bin/kafka-server-start.sh /etc/kafka/server.properties
Restart=on-failure
RestartSec=10
LimitNOFILE=100000
TimeoutStopSec=180
SuccessExitStatus=143

[Install]
WantedBy=multi-user.target
UNIT
)"
systemctl daemon-reload

# Storage, formatted once.
storage() {
    JAVA_HOME=$java_home LOG_DIR=/var/log/kafka KAFKA_HEAP_OPTS=-Xmx256M \
        "$install_dir/current/bin/kafka-storage.sh" "$@"
}
if [[ -f $data_dir/meta.properties ]]; then
    have_id=$(sed -n 's/^cluster\.id=//p' "$data_dir/meta.properties")
    if [[ -n $cluster_id && $have_id != "$cluster_id" ]]; then
        die "$data_dir is formatted for cluster $have_id, not $cluster_id: refusing to touch it"
    fi
    log "$data_dir is formatted (cluster $have_id)"
else
    if [[ -z $cluster_id ]]; then
        cluster_id=$(storage random-uuid | tail -n 1)
        [[ $cluster_id =~ ^[A-Za-z0-9_-]{22}$ ]] || die "kafka-storage.sh random-uuid gave '$cluster_id'"
        log "generated cluster id $cluster_id"
    fi
    log "formatting $data_dir for cluster $cluster_id"
    storage format --ignore-formatted -t "$cluster_id" -c /etc/kafka/server.properties
    chown -R kafka:kafka "$data_dir"
    changed=true
fi

systemctl enable --quiet kafka.service
if [[ $changed == true ]]; then
    log "restarting kafka.service"
    systemctl restart kafka.service
elif ! systemctl is-active --quiet kafka.service; then
    log "starting kafka.service"
    systemctl start kafka.service
else
    log "nothing changed and kafka.service running: nothing to restart"
fi

case $broker_host in
'' | 0.0.0.0) check_host=127.0.0.1 ;;
'[::]') check_host=::1 ;;
\[*) check_host=${broker_host:1:-1} ;;
*) check_host=$broker_host ;;
esac
for ((i = 0; i < 120; i++)); do
    if (exec 3<>"/dev/tcp/$check_host/$broker_port") 2>/dev/null; then
        log "kafka answers on $check_host:$broker_port (node $node_id of $nodes); enabled at boot"
        exit 0
    fi
    if systemctl is-failed --quiet kafka.service; then
        break
    fi
    sleep 1
done
systemctl status --no-pager --full kafka.service >&2 || true
journalctl -u kafka.service -n 50 --no-pager -q >&2 || true
die "kafka does not accept connections on $check_host:$broker_port"
