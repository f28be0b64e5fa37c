#!/usr/bin/env bash
# `make images-test`: build the three images from services/*/Dockerfile and run the compose services
# for real, with Docker when an engine answers, else podman + podman-compose.
#
#   bash scripts/images_test.sh            (root for podman; needs `make sim` for the recording step)
#
# 1. base   python:3.11.11-slim-bookworm, or, when it cannot be pulled, a stand-in built from Debian's
#           packages (scripts/build_base_image.sh; needs debootstrap).
# 2. build  trainer, policy-server, sim-client (one at a time, timed). A local CPU torch wheel found
#           in pip's find-links (or TORCH_WHEEL=...) goes in through services/wheels/.
# 3. data   the demo's recording step on the host (2 expert demonstrations of libero_object task 0,
#           128 px), copied into the compose volume `work-dirs` as work_dirs/demo/data.
# 4. train  `compose up trainer`: the tiny π0 config; exit 0 and a complete work dir (timed).
# 5. serve  `compose up -d policy-server`: its healthcheck goes green; from the host, /readyz, gRPC and
#           HTTP inference, and Debian's Prometheus scraping the published /metrics (tests/deploy/stack_probe).
# 6. eval   `compose run sim-client`: one short episode against the server container; results.jsonl
#           in the volume; the image has no torch.
# 7. stop   `compose stop policy-server`: SIGTERM, the server drains and exits 0.
# Logs, numbers and copies of the work dir go to $IMAGES_TEST_OUT (default work_dirs/images_test);
# the summary is $IMAGES_TEST_OUT/summary.txt. Containers, network and volume are removed at the end
# (IMAGES_TEST_KEEP=1 keeps them); images are kept. IMAGES_TEST_NO_CACHE=1 builds without the layer
# cache (cold build times); IMAGES_TEST_SKIP_BUILD=1 runs the images already built; BASE_IMAGE=...
# skips step 1.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
VPY=${VENV:-$REPO/.venv}/bin/python
OUT=$(mkdir -p "${IMAGES_TEST_OUT:-work_dirs/images_test}" && cd "${IMAGES_TEST_OUT:-work_dirs/images_test}" && pwd)
PROJECT=${IMAGES_TEST_PROJECT:-vla-images-test}
TAG=${VLA_IMAGE_TAG:-0.1.0}
TORCH_VERSION=2.13.0
PUBLIC_BASE=python:3.11.11-slim-bookworm
LOCAL_BASE=localhost/vla-libero/python:3.11-slim-bookworm
SUITE=libero_object   # the demo's: its expert records task 0, the sim client evaluates the same task
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
log() { echo "images_test: $*" >&2; }
note() { echo "$*" | tee -a "$SUMMARY" >&2; }
die() { log "FAILED: $*"; exit 1; }

# --- engine --------------------------------------------------------------------------------------
BUILD_OPTS=()
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  ENGINE=docker
  if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi
elif command -v podman >/dev/null && command -v podman-compose >/dev/null; then
  ENGINE=podman
  COMPOSE=(podman-compose)
  # chroot isolation and the host network for builds; runc and cgroupfs, and no default ulimits above
  # the sandbox's own, for containers. A containers.conf of your own (CONTAINERS_CONF) replaces these.
  # --format docker: OCI image metadata has no HEALTHCHECK, and podman drops it without one.
  BUILD_OPTS=(--format docker --isolation chroot --network host)
  if [[ -z ${CONTAINERS_CONF:-} ]]; then
    export CONTAINERS_CONF=$OUT/containers.conf
    printf '[containers]\ndefault_ulimits = []\n\n[engine]\ncgroup_manager = "cgroupfs"\nruntime = "runc"\n' \
      >"$CONTAINERS_CONF"
  fi
  # pip inside the build trusts what the host trusts (a TLS-inspecting proxy's CA, for one).
  ca=/etc/ssl/certs/ca-certificates.crt
  [[ -f $ca ]] && BUILD_OPTS+=(-v "$ca:$ca:ro")
else
  die "no container engine: neither a running Docker engine nor podman + podman-compose"
fi
COMPOSE+=(-p "$PROJECT" -f "$REPO/docker-compose.yml")
VOLUME=${PROJECT}_work-dirs
note "engine: $ENGINE $("$ENGINE" --version | head -1); compose: ${COMPOSE[0]}"

ctr_of() {  # the container of a compose service (docker compose and podman-compose both set these labels)
  "$ENGINE" ps -a -q --filter "label=com.docker.compose.project=$PROJECT" \
    --filter "label=com.docker.compose.service=$1" | head -1
}
cleanup() {
  rm -f "$REPO"/services/wheels/torch-*.whl
  [[ ${IMAGES_TEST_KEEP:-0} == 1 ]] && return
  "${COMPOSE[@]}" down -v >"$OUT/down.log" 2>&1 || true
  "$ENGINE" volume rm -f "$VOLUME" >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup  # a previous run's leftovers

# --- 1. base image ----------------------------------------------------------------------------------
BASE=${BASE_IMAGE:-}
if [[ -z $BASE ]]; then
  pull_name=$PUBLIC_BASE; [[ $ENGINE == podman ]] && pull_name=docker.io/library/$PUBLIC_BASE
  if "$ENGINE" image inspect "$pull_name" >/dev/null 2>&1 || timeout 120 "$ENGINE" pull -q "$pull_name" >/dev/null 2>&1; then
    BASE=$pull_name
  else
    BASE=$LOCAL_BASE
    if ! "$ENGINE" image inspect "$BASE" >/dev/null 2>&1; then
      log "cannot pull $PUBLIC_BASE; building $BASE from Debian's packages"
      t0=$SECONDS
      bash scripts/build_base_image.sh "$ENGINE" "$BASE" >"$OUT/build_base.log" 2>&1 \
        || die "base image build failed; see $OUT/build_base.log"
      note "base image $BASE built in $((SECONDS - t0)) s"
    fi
  fi
fi
note "base image: $BASE"

# --- 2. the three images -------------------------------------------------------------------------------
wheel=${TORCH_WHEEL:-}
if [[ -z $wheel ]]; then   # a CPU build in pip's find-links (a local wheelhouse), never a download
  links="${PIP_FIND_LINKS:-} $(pip config get global.find-links 2>/dev/null || true)"
  for dir in $links; do
    for w in "$dir"/torch-"$TORCH_VERSION"+cpu-cp311-*.whl; do [[ -f $w ]] && wheel=$w; done
  done
fi
if [[ -n $wheel ]]; then
  ln -f "$wheel" services/wheels/ 2>/dev/null || cp "$wheel" services/wheels/
  note "torch: local wheel $(basename "$wheel") (through services/wheels/)"
else
  note "torch: $TORCH_VERSION from the CPU index"
fi
[[ ${IMAGES_TEST_NO_CACHE:-0} == 1 ]] && BUILD_OPTS+=(--no-cache)   # cold build times
build() {  # build NAME DOCKERFILE
  local t0=$SECONDS
  "$ENGINE" build "${BUILD_OPTS[@]}" --build-arg "BASE_IMAGE=$BASE" -f "$2" -t "vla-libero/$1:$TAG" . \
    >"$OUT/build_$1.log" 2>&1 || die "building $1 failed; see $OUT/build_$1.log"
  local bytes
  bytes=$("$ENGINE" image inspect -f '{{.Size}}' "vla-libero/$1:$TAG")
  note "image vla-libero/$1:$TAG: built in $((SECONDS - t0)) s, $((bytes / 1000000)) MB"
}
if [[ ${IMAGES_TEST_SKIP_BUILD:-0} != 1 ]]; then
  build trainer services/trainer/Dockerfile
  build policy-server services/policy_server/Dockerfile
  build sim-client services/sim_client/Dockerfile
fi
"$ENGINE" image prune -f >/dev/null 2>&1 || true   # the dangling layers of earlier builds

# --- 3. the demo's data, recorded on the host, into the volume --------------------------------------------
DATA_HOST=${IMAGES_TEST_DATA:-$OUT/demo}
[[ -x $VPY ]] || die "no Python at $VPY (make install sim, or VENV=...)"
log "recording the demo dataset into $DATA_HOST (LIBERO on the host)"
t0=$SECONDS
PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH} "$VPY" -m demo --root "$DATA_HOST" --stop-after record \
  --suite "$SUITE" --tasks 0 --episodes-per-task 2 --image-size 128 --workers 1 >"$OUT/record.log" 2>&1 \
  || die "recording failed; see $OUT/record.log"
frames=$("$VPY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["total_frames"])' "$DATA_HOST/data/meta/info.json")
note "data: $SUITE task 0, 2 expert demonstrations, $frames frames, 128 px ($((SECONDS - t0)) s, a rerun skips it)"
# The trainer image's uid copies it in, so the volume and what is in it belong to that uid.
"$ENGINE" volume create "$VOLUME" >/dev/null
"$ENGINE" run --rm -v "$VOLUME:/app/work_dirs" -v "$DATA_HOST/data:/seed:ro" --entrypoint bash \
  "vla-libero/trainer:$TAG" -c 'mkdir -p work_dirs/demo && cp -r /seed work_dirs/demo/data' \
  || die "copying the dataset into volume $VOLUME failed"

# --- 4. train ------------------------------------------------------------------------------------------------
log "compose up trainer"
t0=$SECONDS
"${COMPOSE[@]}" up trainer >"$OUT/trainer.log" 2>&1 || true
TRAIN_S=$((SECONDS - t0))
ctr=$(ctr_of trainer)
code=$("$ENGINE" inspect -f '{{.State.ExitCode}}' "$ctr")
[[ $code == 0 ]] || die "trainer exited $code; see $OUT/trainer.log"
note "up trainer: exit 0 in $TRAIN_S s (wall, tiny π0 config, 1 epoch)"
in_volume() {  # run a command in the trainer image with the volume mounted read-only at /app/work_dirs
  "$ENGINE" run --rm -i -v "$VOLUME:/app/work_dirs:ro" --entrypoint "$1" "vla-libero/trainer:$TAG" "${@:2}"
}
workdir_check=$(in_volume python - <<'PY'
import json, sys
from pathlib import Path
wd = Path("/app/work_dirs/demo")
latest = (wd / "latest").read_text().strip()
need = [wd / latest, wd / "config.json", wd / "dataset_statistics.json", wd / "metrics.jsonl", wd / "tokenizer/tokenizer.json"]
missing = [str(p) for p in need if not p.exists()]
if missing:
    sys.exit(f"missing: {missing}")
steps = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines() if line.strip()]
if not steps:
    sys.exit("metrics.jsonl has no records")
print(f"work dir: latest={latest}, {len(steps)} metric records, files: {sorted(p.name for p in wd.iterdir())}")
PY
) || die "the trainer's work dir is incomplete: $workdir_check"
note "$workdir_check"
in_volume tar -C /app/work_dirs --exclude demo/data -c demo | tar -x -C "$OUT"   # the work dir, for the record

# --- 5. serve --------------------------------------------------------------------------------------------------
free_port() { "$VPY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export GRPC_PORT=${GRPC_PORT:-$(free_port)} HTTP_PORT=${HTTP_PORT:-$(free_port)}
log "compose up -d policy-server (gRPC 127.0.0.1:$GRPC_PORT, HTTP 127.0.0.1:$HTTP_PORT)"
"${COMPOSE[@]}" up -d policy-server >"$OUT/server_up.log" 2>&1 || die "starting the server failed; see $OUT/server_up.log"
server=$(ctr_of policy-server)
healthy() {  # the compose file's healthcheck, run by the engine
  if [[ $ENGINE == docker ]]; then
    [[ $(docker inspect -f '{{.State.Health.Status}}' "$server") == healthy ]]
  else
    podman healthcheck run "$server" >/dev/null   # no systemd timers here: run it on demand
  fi
}
t0=$SECONDS
failing=0
until healthy 2>/dev/null; do
  failing=$((failing + 1))
  [[ $("$ENGINE" inspect -f '{{.State.Running}}' "$server") == true ]] || { "$ENGINE" logs "$server" >"$OUT/server.log" 2>&1; die "the server exited; see $OUT/server.log"; }
  ((SECONDS - t0 < 300)) || die "the server was not healthy after 300 s"
  sleep 2
done
note "policy-server: healthcheck green $((SECONDS - t0)) s after start ($failing failing checks while it warmed up)"
PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH} "$VPY" -m tests.deploy.stack_probe --grpc-port "$GRPC_PORT" \
  --http-port "$HTTP_PORT" --workdir "$OUT/prometheus" >"$OUT/probe.json" 2>"$OUT/probe.log" \
  || die "probing the server from the host failed; see $OUT/probe.log"
note "from the host: $(cat "$OUT/probe.json")"

# --- 6. eval ----------------------------------------------------------------------------------------------------
log "compose run sim-client (1 episode, 30 steps)"
sim_name=${PROJECT}_sim-client_run
"$ENGINE" rm -f "$sim_name" >/dev/null 2>&1 || true
t0=$SECONDS
"${COMPOSE[@]}" run -T --no-deps --name "$sim_name" sim-client --suite "$SUITE" --tasks 0 --trials 1 \
  --max-steps 30 --workers 1 --video none --server grpc://policy-server:50051 \
  --out /app/work_dirs/demo/eval >"$OUT/sim_client.log" 2>&1 || true
code=$("$ENGINE" inspect -f '{{.State.ExitCode}}' "$sim_name")
"$ENGINE" rm -f "$sim_name" >/dev/null
[[ $code == 0 ]] || die "sim-client exited $code; see $OUT/sim_client.log"
in_volume cat /app/work_dirs/demo/eval/results.jsonl >"$OUT/results.jsonl" || die "no results.jsonl in the volume"
[[ -s $OUT/results.jsonl ]] || die "results.jsonl is empty"
note "sim-client: exit 0 in $((SECONDS - t0)) s; results.jsonl: $(head -c 300 "$OUT/results.jsonl")"
if "$ENGINE" run --rm --entrypoint python "vla-libero/sim-client:$TAG" -c "import torch" >/dev/null 2>&1; then
  die "the sim-client image has torch"
fi
note "sim-client image: import torch fails (no torch)"

# --- 7. stop: SIGTERM drains the server --------------------------------------------------------------------
t0=$SECONDS
"${COMPOSE[@]}" stop -t 40 policy-server >"$OUT/server_stop.log" 2>&1 || die "compose stop failed"
"$ENGINE" logs "$server" >"$OUT/server.log" 2>&1
code=$("$ENGINE" inspect -f '{{.State.ExitCode}}' "$server")
[[ $code == 0 ]] || die "the server exited $code on stop (137 = killed after the grace period); see $OUT/server.log"
grep -q "stopped (drained)" "$OUT/server.log" || die "the server did not log a drain; see $OUT/server.log"
note "compose stop policy-server: SIGTERM, drained, exit 0 in $((SECONDS - t0)) s"
"$ENGINE" image ls --filter "reference=vla-libero/*" >>"$SUMMARY"
log "PASS (summary: $SUMMARY)"
