#!/usr/bin/env bash
# Minos recipe "service-restart": restart or reload a service and check it comes back.
#
# Parameters (environment): MINOS_PARAM_NAME, MINOS_PARAM_ACTION, MINOS_PARAM_TIMEOUT,
# MINOS_PARAM_SETTLE.
#
# On systemd: the unit must exist; `systemctl <action>` runs (bounded by the timeout),
# then the unit must reach "active" within the timeout and stay active, without an
# automatic restart, for `settle` seconds. Without systemd: service(8) or rc-service,
# and the service's own status command must succeed. Any failure prints the status
# (and, on systemd, the unit's recent journal) and exits 1.
set -euo pipefail

log() { printf 'service-restart: %s\n' "$*"; }
die() {
    printf 'service-restart: error: %s\n' "$*" >&2
    exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }

name=${MINOS_PARAM_NAME-}
action=${MINOS_PARAM_ACTION-restart}
timeout=${MINOS_PARAM_TIMEOUT-90}
settle=${MINOS_PARAM_SETTLE-5}

[[ -n $name ]] || die "MINOS_PARAM_NAME is required: the service to restart"
if ! [[ $name =~ ^[A-Za-z0-9][A-Za-z0-9@._:-]{0,254}$ ]]; then
    die "MINOS_PARAM_NAME '$name' is not a service name (letters, digits, @ . _ : -)"
fi
case $action in
restart | reload | reload-or-restart) ;;
*) die "MINOS_PARAM_ACTION must be restart, reload or reload-or-restart, not '$action'" ;;
esac
if ! [[ $timeout =~ ^[0-9]{1,4}$ ]] || ((10#$timeout < 1 || 10#$timeout > 3600)); then
    die "MINOS_PARAM_TIMEOUT must be an integer from 1 to 3600, not '$timeout'"
fi
if ! [[ $settle =~ ^[0-9]{1,3}$ ]] || ((10#$settle > 600)); then
    die "MINOS_PARAM_SETTLE must be an integer from 0 to 600, not '$settle'"
fi
timeout=$((10#$timeout))
settle=$((10#$settle))

[[ $(id -u) == 0 ]] || die "must run as root to $action a service (run the task as root)"

# bounded CMD...: CMD, killed after the timeout when timeout(1) exists.
bounded() {
    if have timeout; then
        timeout "$timeout" "$@"
    else
        "$@"
    fi
}

if [[ -d /run/systemd/system ]] && have systemctl; then
    unit=$name
    # `show -p X` prints "X=value"; --value is missing from older systemd.
    prop() {
        local line
        line=$(systemctl show -p "$1" -- "$unit" 2>/dev/null) || true
        printf '%s' "${line#"$1"=}"
    }
    fail() {
        printf 'service-restart: error: %s\n' "$*" >&2
        echo "--- systemctl status $unit ---"
        systemctl status --no-pager --full --lines=0 -- "$unit" || true
        echo "--- journalctl -u $unit (last 50 lines) ---"
        journalctl -u "$unit" -n 50 --no-pager -q || true
        exit 1
    }

    load=$(prop LoadState)
    [[ $load == loaded ]] || die "unit $unit: not found (LoadState=${load:-unknown})"
    log "$unit was $(prop ActiveState) ($(prop SubState)) since $(prop ActiveEnterTimestamp)"
    log "systemctl $action $unit"
    bounded systemctl "$action" -- "$unit" || fail "systemctl $action $unit failed"

    waited=0
    while true; do
        state=$(prop ActiveState)
        case $state in
        active) break ;;
        failed) fail "$unit failed while starting" ;;
        esac
        ((waited < timeout)) || fail "$unit is still $state after ${timeout}s"
        sleep 1
        waited=$((waited + 1))
    done
    log "$unit is active after ${waited}s"

    if ((settle > 0)); then
        restarts=$(prop NRestarts)
        pid=$(prop MainPID)
        sleep "$settle"
        state=$(prop ActiveState)
        [[ $state == active ]] || fail "$unit became $state within ${settle}s of starting"
        if [[ -n $restarts && $(prop NRestarts) != "$restarts" ]]; then
            fail "$unit restarted by itself within ${settle}s (crash loop?)"
        fi
        if [[ $pid != 0 && $(prop MainPID) != "$pid" ]]; then
            fail "$unit changed its main process within ${settle}s (crash loop?)"
        fi
        log "$unit stayed active for ${settle}s"
    fi
    systemctl status --no-pager --lines=0 -- "$unit" || true
    exit 0
fi

# Without systemd: service(8) (sysvinit, Upstart) or OpenRC.
svc=${name%.service}
if have service; then
    ctl=(service "$svc")
elif have rc-service; then
    ctl=(rc-service "$svc")
else
    die "no systemd, service or rc-service on this host: cannot manage $svc"
fi
fail() {
    printf 'service-restart: error: %s\n' "$*" >&2
    echo "--- status of $svc ---"
    "${ctl[@]}" status || true
    exit 1
}

case $action in
restart)
    log "restarting $svc"
    bounded "${ctl[@]}" restart || fail "restart of $svc failed"
    ;;
reload)
    log "reloading $svc"
    bounded "${ctl[@]}" reload || fail "reload of $svc failed"
    ;;
reload-or-restart)
    log "reloading $svc (restarting if that fails)"
    bounded "${ctl[@]}" reload || bounded "${ctl[@]}" restart ||
        fail "reload and restart of $svc failed"
    ;;
esac
waited=0
until "${ctl[@]}" status >/dev/null 2>&1; do
    ((waited < timeout)) || fail "$svc is not running after ${timeout}s"
    sleep 1
    waited=$((waited + 1))
done
if ((settle > 0)); then
    sleep "$settle"
    "${ctl[@]}" status >/dev/null 2>&1 || fail "$svc stopped within ${settle}s of starting"
fi
log "$svc is running"
"${ctl[@]}" status || true
