#!/usr/bin/env bash
# make demo: start explorerd and provisiond on 127.0.0.1 with state under
# .demo/, reserve a network, a volume and a container with provctl, show
# their verified results and the node's stats, delete them, stop cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: run as root (sudo make demo): the daemon creates namespaces, loop devices, mounts and containers" >&2
  exit 1
fi
./scripts/deps.sh >/dev/null

DEMO=$PWD/.demo
BIN=$PWD/bin
PORT=${DEMO_PORT:-18090}
EXPLORER=http://127.0.0.1:$PORT
pids=()

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

stop_all() {
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  pids=()
}
trap 'status=$?; stop_all; if [ $status -ne 0 ]; then echo "demo failed; logs in $DEMO/*.log" >&2; fi' EXIT

# A previous demo's daemon may still hold the state: stop it first.
for f in "$DEMO"/*.pid; do
  [ -e "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null || true
done
mkdir -p "$DEMO"

say "starting explorerd on $EXPLORER"
"$BIN/explorerd" --listen "127.0.0.1:$PORT" --data-dir "$DEMO/explorer" >"$DEMO/explorerd.log" 2>&1 &
pids+=($!); echo $! >"$DEMO/explorerd.pid"
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done

node=(--data-dir "$DEMO/node" --socket "$DEMO/provisiond.sock" --config /dev/null)
say "starting provisiond (data dir $DEMO/node)"
# Local container images are served from $DEMO/images only: not from
# $DEMO, which holds the node's database and identity.
mkdir -p "$DEMO/images"
"$BIN/provisiond" "${node[@]}" --log-format console run --explorer "$EXPLORER" --metrics-listen 127.0.0.1:0 \
  --local-images "$DEMO/images" >"$DEMO/provisiond.log" 2>&1 &
pids+=($!); echo $! >"$DEMO/provisiond.pid"
for _ in $(seq 300); do
  [ -S "$DEMO/provisiond.sock" ] && break
  sleep 0.1
done
"$BIN/provisiond" "${node[@]}" status
NODE=$("$BIN/provisiond" "${node[@]}" key show --json | sed -n 's/.*"node_id": *"\([^"]*\)".*/\1/p')

export PROVCTL_EXPLORER=$EXPLORER PROVCTL_KEY=$DEMO/user.key
[ -f "$PROVCTL_KEY" ] || "$BIN/provctl" key new

say "building a busybox rootfs image"
rootfs=$DEMO/rootfs
rm -rf "$rootfs" && mkdir -p "$rootfs/bin" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" "$rootfs/tmp" "$rootfs/data"
cp "$(command -v busybox)" "$rootfs/bin/busybox"
for app in sh sleep cat echo ls ip ping; do ln -sf busybox "$rootfs/bin/$app"; done
tar -C "$rootfs" -cf "$DEMO/images/rootfs.tar" .
digest=$(sha256sum "$DEMO/images/rootfs.tar" | cut -d' ' -f1)

say "reserving a network, a volume and a container"
suffix=$(date +%s)
net_id=$("$BIN/provctl" reserve network --node "$NODE" --name "demo-$suffix" --ip-range 10.240.0.0/16 --subnet 10.240.1.0/24 --duration 1h)
vol_id=$("$BIN/provctl" reserve volume --node "$NODE" --size 1 --type ssd --duration 1h)
ctr_id=$("$BIN/provctl" reserve container --node "$NODE" --image "$DEMO/images/rootfs.tar" --image-digest "$digest" \
  --entrypoint /bin/sh --entrypoint -c --entrypoint 'echo hello from the container > /data/hello; exec sleep 3600' \
  --mount "$vol_id:/data" --network "demo-$suffix" --ip 10.240.1.10 --cpu 1 --memory 64 --disk 256 --duration 1h)
echo "network $net_id, volume $vol_id, container $ctr_id"

say "waiting for the node's signed results"
for id in "$net_id" "$vol_id" "$ctr_id"; do
  "$BIN/provctl" watch "$id" --until ok --timeout 2m
done
for id in "$net_id" "$vol_id" "$ctr_id"; do
  "$BIN/provctl" get "$id"
done

say "the container wrote into its volume"
hello=$DEMO/node/mounts/prv-$vol_id/hello
for _ in $(seq 100); do [ -s "$hello" ] && break; sleep 0.1; done
echo "$hello: $(cat "$hello")"

say "what the node holds"
"$BIN/provisiond" "${node[@]}" cache ls
"$BIN/provisiond" "${node[@]}" stats

say "deleting everything (owner-signed)"
for id in "$ctr_id" "$vol_id" "$net_id"; do
  "$BIN/provctl" delete "$id"
  "$BIN/provctl" watch "$id" --until deleted --timeout 2m
done
"$BIN/provisiond" "${node[@]}" stats

say "stopping"
stop_all
rm -f "$DEMO"/*.pid
echo "demo done; state kept in $DEMO (make clean removes it)"
