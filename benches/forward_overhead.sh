#!/usr/bin/env bash
# Ingest rate of a minos server without forwarding, forwarding to a closed port (the
# queue only), and forwarding to a VictoriaMetrics on the same machine: three runs of
# each, alternating. Needs `cargo build --release -p minos -p minos-benches --bin minos
# --bin loadgen` and `victoria-metrics` (Debian package) on PATH or in /usr/bin.
set -u
BIN="${MINOS_BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}"
W=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$W"' EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_ready() { for i in $(seq 1 600); do curl -sf "$1/-/ready" >/dev/null 2>&1 && return 0; curl -sf "$1/health" >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }
run() { # mode run#
  local mode=$1 n=$2 p; p=$(port)
  local extra=() vmpid=""
  if [ "$mode" = vm ]; then
    local vp; vp=$(port)
    /usr/bin/victoria-metrics -storageDataPath "$W/vm$n" -httpListenAddr 127.0.0.1:$vp -loggerLevel ERROR >/dev/null 2>&1 & vmpid=$!
    wait_ready "http://127.0.0.1:$vp"
    extra=(--remote-write.url "http://127.0.0.1:$vp/api/v1/write")
  elif [ "$mode" = closed ]; then
    extra=(--remote-write.url "http://127.0.0.1:$(port)/api/v1/write")
  fi
  $BIN/minos server --data "$W/m-$mode-$n" --listen 127.0.0.1:$p "${extra[@]}" >/dev/null 2>"$W/m-$mode-$n.log" & local mp=$!
  wait_ready "http://127.0.0.1:$p"
  local out; out=$($BIN/loadgen --url http://127.0.0.1:$p/api/v1/write --series 10000 --points 500 2>/dev/null)
  local rate; rate=$(echo "$out" | python3 -c 'import json,sys;print(round(json.load(sys.stdin)["samples_per_sec"]))')
  local drain=""
  if [ "$mode" = vm ]; then
    local t0; t0=$(date +%s.%N)
    for i in $(seq 1 600); do
      q=$(curl -s http://127.0.0.1:$p/metrics | awk '/^minos_forward_queue_requests /{print $2}')
      s=$(curl -s http://127.0.0.1:$p/metrics | awk '/^minos_forward_samples_total\{result="sent"\}/{print $2}')
      [ "$q" = "0" ] && [ "${s%.*}" -ge 5000000 ] 2>/dev/null && break
      sleep 0.5
    done
    drain=$(python3 -c "import time;print(round(time.time()-$t0,1))")
    drain="$drain s to drain (sent $s)"
  fi
  if [ "$mode" = closed ]; then
    drain="queue $(curl -s http://127.0.0.1:$p/metrics | awk '/^minos_forward_queue_bytes /{print $2}') bytes"
  fi
  kill $mp; wait $mp 2>/dev/null
  [ -n "$vmpid" ] && { kill $vmpid; wait $vmpid 2>/dev/null; }
  echo "$mode run $n: $rate samples/s $drain"
}
for n in 1 2 3; do run none $n; run closed $n; run vm $n; done

