#!/usr/bin/env bash
# Docker smoke test of the cluster profile (`make docker-smoke-cluster`, and .ci/run after the
# single-machine smoke test): `docker compose --profile cluster up` with PostgreSQL, two API
# replicas behind the load balancer, two training workers and the registry on a shared volume, then
#   /predict through the load balancer is answered by both replicas (its X-Upstream header names
#   the replica), a tiny training job submitted through it runs on a worker and publishes a version,
#   a promote through it makes both replicas serve that version, and `--profile cluster down -v`.
#
# SMOKE_REGISTRY=s3 (`make docker-smoke-cluster-s3`) runs the S3 variant instead: docker-compose.s3.yml
# on top, so an S3 server (`s3`) holds the registry and the one-shot `s3-bucket` creates the bucket
# and seeds it with the shipped baseline before the replicas start; the test also checks that the
# baseline and the trained version are objects in the bucket and that the trained one is not on the
# `cluster-models` volume.
#
# Docker Hub may be out of reach (it is on the machines this is developed on), so by default the
# postgres and nginx images are local stand-ins built here from the Debian base image ($BASE_IMAGE,
# as `docker-local.sh env` exports it) with Debian's postgresql-15 and nginx packages, and with
# SMOKE_REGISTRY=s3 the minio image one with moto's S3 server from PyPI (tests/docker/standins/).
# SMOKE_OFFICIAL_IMAGES=1 uses the compose files' official images instead.
#
# The training data is a tiny synthetic MNIST (3000 + 200 images) written by the built image's NumPy,
# mounted read-only into the workers: the step needs no download and takes seconds.
#
# Knobs: COMPOSE, BASE_IMAGE, DOCKER_BUILD_NETWORK, SMOKE_PORT, SMOKE_TIMEOUT (seconds for each
# wait, default 180), SMOKE_REGISTRY (volume, the default, or s3), SMOKE_OFFICIAL_IMAGES, SMOKE_KEEP
# (keep the images).
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$(pwd)
TIMEOUT=${SMOKE_TIMEOUT:-180}
STARTED_AT=$SECONDS
REGISTRY_KIND=${SMOKE_REGISTRY:-volume}

step() { printf '\n=== cluster smoke (%s registry): %s (%s, %ss in)\n' "$REGISTRY_KIND" "$*" "$(date +%T)" "$((SECONDS - STARTED_AT))"; }
info() { printf '    %s\n' "$*"; }
fail() {
  printf '\n!!! cluster smoke FAILED: %s\n' "$*" >&2
  exit 1
}

# --- preflight ----------------------------------------------------------------------------------
step "preflight"
case "$REGISTRY_KIND" in
  volume) COMPOSE_FILES=(-f "$ROOT/docker-compose.yml") ;;
  s3) COMPOSE_FILES=(-f "$ROOT/docker-compose.yml" -f "$ROOT/docker-compose.s3.yml") ;;
  *) fail "SMOKE_REGISTRY=$REGISTRY_KIND: expected volume or s3" ;;
esac
# shellcheck source=preflight.sh
source "$ROOT/tests/docker/preflight.sh"

# A known configuration: no MNIST_*, AWS_*, COMPOSE_PROFILES or COMPOSE_FILE from the caller's shell
# reaches compose.
while read -r name; do unset "$name"; done < <(compgen -e | grep -E '^(MNIST_|AWS_|COMPOSE_PROFILES$|COMPOSE_FILE$)' || true)

PROJECT="mnistcluster$(date +%s)$$"
PORT=${SMOKE_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
BASE="http://127.0.0.1:$PORT"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/mnist-cluster-smoke.XXXXXX")
export MNIST_IMAGE="mnist-service:cluster-$PROJECT"
export MNIST_PUBLISH="127.0.0.1:$PORT"
export MNIST_ROBUSTNESS_SAMPLE=0     # no robustness suite after the tiny job
export MNIST_WORKER_DEAD_AFTER_S=10
export BASE_IMAGE=${BASE_IMAGE:-python:3.12-slim}
export DOCKER_BUILD_NETWORK=${DOCKER_BUILD_NETWORK:-default}
info "project: $PROJECT  image: $MNIST_IMAGE  load balancer: $BASE  base image: $BASE_IMAGE"

compose() { "${COMPOSE_CMD[@]}" -p "$PROJECT" "${COMPOSE_FILES[@]}" --profile cluster "$@"; }

cleanup() {
  local rc=$?
  set +e
  if [ "$rc" -ne 0 ]; then
    printf '\n--- last log lines (exit status %s) ---\n' "$rc" >&2
    compose logs --no-color --tail=40 >&2 2>&1
  fi
  step "cleanup: down -v"
  compose down -v --remove-orphans --timeout 10 >/dev/null 2>&1
  local label="label=com.docker.compose.project=$PROJECT"
  docker ps -aq --filter "$label" | xargs -r docker rm -f >/dev/null 2>&1
  docker volume ls -q --filter "$label" | xargs -r docker volume rm >/dev/null 2>&1
  docker network ls -q --filter "$label" | xargs -r docker network rm >/dev/null 2>&1
  if [ -z "${SMOKE_KEEP:-}" ]; then
    docker rmi --no-prune "$MNIST_IMAGE" >/dev/null 2>&1  # the layers stay cached for the next run
  fi
  rm -rf "$TMP"
  if [ "$rc" -eq 0 ]; then step "PASSED in $((SECONDS - STARTED_AT))s"; else printf '\n!!! cluster smoke FAILED (exit status %s)\n' "$rc" >&2; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# http METHOD PATH [curl args...]: prints the status code; body in $TMP/body, headers in $TMP/headers.
http() {
  local method=$1 path=$2
  shift 2
  : >"$TMP/body"
  curl -sS -D "$TMP/headers" -o "$TMP/body" -w '%{http_code}' -X "$method" --max-time 30 "$@" "$BASE$path" || true
}
expect() { # expect STATUS METHOD PATH [curl args...]
  local want=$1 got
  shift
  got=$(http "$@")
  [ "$got" = "$want" ] || fail "$1 $2: expected HTTP $want, got $got: $(head -c 400 "$TMP/body")"
}
json() { python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$TMP/body" "$1"; }
upstream() { tr -d '\r' <"$TMP/headers" | sed -n 's/^[Xx]-[Uu]pstream: *//p' | tail -1; }
# replica_ready SERVICE: "<version> <generation>" from that replica's own /readyz (inside its container)
replica_ready() {
  compose exec -T "$1" python -c 'import json, urllib.request
d = json.load(urllib.request.urlopen("http://127.0.0.1:8000/readyz", timeout=5))
print(d["version"], d["generation"])' 2>/dev/null || echo "none none"
}
ip_of() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$(compose ps -q "$1")" | awk '{print $1}'; }

# --- stand-ins for the official images ------------------------------------------------------------
if [ -z "${SMOKE_OFFICIAL_IMAGES:-}" ]; then
  export MNIST_POSTGRES_IMAGE=local/postgres-standin:15 MNIST_LB_IMAGE=local/nginx-standin:latest
  standins=("postgres:$MNIST_POSTGRES_IMAGE" "nginx:$MNIST_LB_IMAGE")
  if [ "$REGISTRY_KIND" = s3 ]; then
    export MNIST_S3_IMAGE=local/minio-standin:latest
    standins+=("minio:$MNIST_S3_IMAGE")
  fi
  step "build the stand-ins from $BASE_IMAGE: ${standins[*]%%:*}"
  for pair in "${standins[@]}"; do
    started=$SECONDS
    if ! docker build --network "$DOCKER_BUILD_NETWORK" --build-arg "BASE_IMAGE=$BASE_IMAGE" \
      -t "${pair#*:}" "$ROOT/tests/docker/standins/${pair%%:*}" >"$TMP/build.log" 2>&1; then
      tail -n 30 "$TMP/build.log" >&2
      fail "could not build the ${pair%%:*} stand-in (is apt reachable inside docker build? DOCKER_BUILD_NETWORK=host may help)"
    fi
    info "${pair#*:}: built in $((SECONDS - started))s"
  done
else
  info "official images: ${MNIST_POSTGRES_IMAGE:-postgres:15}, ${MNIST_LB_IMAGE:-nginx:1.27}$([ "$REGISTRY_KIND" = s3 ] && echo ", the compose file's minio/minio")"
fi

step "build the service image: $COMPOSE build api-a"
started=$SECONDS
compose build api-a
info "built in $((SECONDS - started))s"

step "a tiny MNIST for the workers (synthetic, written by the image's NumPy)"
mkdir -p "$TMP/mnist"
docker run --rm --user 0 -v "$TMP/mnist:/out" --entrypoint python "$MNIST_IMAGE" -c '
import struct
import numpy as np
rng = np.random.default_rng(0)
prototypes = (rng.random((10, 784)) < 0.2).astype(np.float64)   # one learnable pattern per digit
for prefix, n in (("train", 3000), ("t10k", 200)):
    labels = (np.arange(n) % 10).astype(np.uint8)
    rng.shuffle(labels)
    pixels = prototypes[labels] * rng.uniform(150, 255, (n, 1)) + rng.uniform(0, 60, (n, 784)) * (rng.random((n, 784)) < 0.3)
    images = np.clip(pixels, 0, 255).astype(np.uint8)
    open(f"/out/{prefix}-images-idx3-ubyte", "wb").write(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
    open(f"/out/{prefix}-labels-idx1-ubyte", "wb").write(struct.pack(">II", 2049, n) + labels.tobytes())
'
chmod -R a+rX "$TMP/mnist"
export MNIST_HOST_DATA="$TMP/mnist" MNIST_WORKER_DATA_DIR=/mnist
info "$(ls "$TMP/mnist" | paste -sd' ' -)"

# --- up -----------------------------------------------------------------------------------------
step "$COMPOSE --profile cluster up -d"
started=$SECONDS
compose up -d
services=$(docker ps --filter "label=com.docker.compose.project=$PROJECT" --format '{{.Label "com.docker.compose.service"}}' | sort | paste -sd' ' -)
expected="api-a api-b lb postgres worker-a worker-b"
[ "$REGISTRY_KIND" = s3 ] && expected="api-a api-b lb postgres s3 worker-a worker-b"
[ "$services" = "$expected" ] ||
  fail "the cluster profile started '$services' (expected $expected, not the single api)"
info "running: $services"
if [ "$REGISTRY_KIND" = s3 ]; then
  # The one-shot ran before the replicas (they depend on its success); it has exited by now.
  seeder=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" --filter "label=com.docker.compose.service=s3-bucket")
  [ -n "$seeder" ] && [ "$(docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$seeder")" = "exited 0" ] ||
    fail "s3-bucket did not run to exit status 0: $(docker logs "$seeder" 2>&1 | tail -5)"
  info "s3-bucket exited 0: $(docker logs "$seeder" 2>&1 | tail -2 | paste -sd' ' -)"
fi
deadline=$((SECONDS + TIMEOUT))
until [ "$(http GET /readyz)" = 200 ]; do
  [ "$SECONDS" -lt "$deadline" ] || fail "the load balancer's /readyz is not 200 after ${TIMEOUT}s"
  sleep 1
done
info "ready through the load balancer after $((SECONDS - started))s: $(cat "$TMP/body")"
BASELINE=$(json 'd["version"]')

# bucket_versions: the complete versions (manifest and weights) under MNIST_REGISTRY_URL, listed with
# boto3 inside api-a (the replica's own endpoint and credentials), not through the service.
bucket_versions() {
  compose exec -T api-a python -c 'import os, boto3
from urllib.parse import urlparse
url = urlparse(os.environ["MNIST_REGISTRY_URL"])
prefix = (url.path.strip("/") + "/" if url.path.strip("/") else "") + os.environ.get("MNIST_MODEL_NAME", "mnist") + "/"
pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=url.netloc, Prefix=prefix)
keys = {o["Key"][len(prefix):] for page in pages for o in page.get("Contents", [])}
print(os.environ["MNIST_REGISTRY_URL"], *sorted(k[:-5] for k in keys if k.endswith(".json") and k[:-5] + ".npz" in keys))'
}
# volume_versions: what the `cluster-models` volume holds (the registry of the volume variant)
volume_versions() { compose exec -T api-a sh -c 'cd /app/models/mnist 2>/dev/null && ls v*.json 2>/dev/null | sed "s/[.]json$//"' | paste -sd' ' -; }
if [ "$REGISTRY_KIND" = s3 ]; then
  step "the registry is the bucket, seeded with the shipped baseline"
  listing=$(bucket_versions) || fail "could not list the bucket from api-a"
  read -r -a seeded <<<"$listing"
  info "objects in ${seeded[0]}: ${seeded[*]:1}"
  case " ${seeded[*]:1} " in *" $BASELINE "*) ;; *) fail "the served $BASELINE is not a version in the bucket (${seeded[*]:1})" ;; esac
fi

step "the cluster's token, kept in PostgreSQL: the same on both replicas"
TOKEN=$(compose exec -T api-a python -m service token)
[ -n "$TOKEN" ] || fail "python -m service token printed nothing on api-a"
[ "$(compose exec -T api-b python -m service token)" = "$TOKEN" ] || fail "api-b prints another token than api-a"
AUTH=(-H "Authorization: Bearer $TOKEN")
expect 401 POST /models/rollback
info "both replicas print the same token; a request without it is 401"

step "/predict through the load balancer is answered by both replicas"
docker run --rm --entrypoint python "$MNIST_IMAGE" -c '
import io, sys
from PIL import Image, ImageDraw
img = Image.new("L", (96, 96), 255)
ImageDraw.Draw(img).line([(50, 12), (46, 84)], fill=0, width=9)
buf = io.BytesIO(); img.save(buf, "PNG"); sys.stdout.buffer.write(buf.getvalue())' >"$TMP/digit.png"
A_IP=$(ip_of api-a)
B_IP=$(ip_of api-b)
info "api-a is $A_IP, api-b is $B_IP"
# predict_all VERSION: eight predictions; every one from VERSION; prints the replicas that answered
predict_all() {
  local seen="" up
  for _ in 1 2 3 4 5 6 7 8; do
    expect 200 POST /predict -F "file=@$TMP/digit.png;type=image/png"
    [ "$(json 'd["version"]')" = "$1" ] || fail "/predict answered with $(json 'd["version"]'), expected $1"
    up=$(upstream)
    case "$up" in "$A_IP":*) seen="$seen a" ;; "$B_IP":*) seen="$seen b" ;; *) fail "X-Upstream '$up' is neither replica" ;; esac
  done
  echo "$seen" | tr ' ' '\n' | sort -u | paste -sd' ' - | sed 's/^ //'
}
answered=$(predict_all "$BASELINE")
[ "$answered" = "a b" ] || fail "only replica(s) '$answered' answered eight predictions"
info "eight predictions of $BASELINE, answered by replicas: $answered"

step "two workers beat their heart into PostgreSQL (GET /workers)"
deadline=$((SECONDS + TIMEOUT))
until [ "$(http GET /workers)" = 200 ] && [ "$(json 'len(d["workers"])')" = 2 ]; do
  [ "$SECONDS" -lt "$deadline" ] || fail "GET /workers does not list two workers after ${TIMEOUT}s: $(cat "$TMP/body")"
  sleep 1
done
hosts=$(json '" ".join(sorted(w["host"] for w in d["workers"]))')
want=$(for s in worker-a worker-b; do docker inspect -f '{{.Config.Hostname}}' "$(compose ps -q "$s")"; done | sort | paste -sd' ' -)
[ "$hosts" = "$want" ] || fail "GET /workers lists hosts '$hosts', the worker containers are '$want'"
info "workers on hosts $hosts"

step "a tiny training job through the load balancer runs on a worker"
started=$SECONDS
expect 202 POST /train "${AUTH[@]}" -H 'Content-Type: application/json' \
  -d '{"preset": "fast", "hidden": [16], "epochs": 2, "val_size": 200}'
JOB=$(json 'd["id"]')
info "job $JOB queued"
deadline=$((SECONDS + TIMEOUT))
while :; do
  expect 200 GET "/train/$JOB"
  state=$(json 'd["state"]')
  case "$state" in succeeded) break ;; failed | cancelled) fail "the job ended $state: $(json 'd["error"]')" ;; esac
  [ "$SECONDS" -lt "$deadline" ] || fail "the job is still $state after ${TIMEOUT}s"
  sleep 1
done
TRAINED=$(json 'd["version"]')
for s in worker-a worker-b; do compose logs --no-color "$s" >"$TMP/$s.log" 2>&1 || true; done
ran_on=$( (grep -l "training job $JOB started" "$TMP/worker-a.log" "$TMP/worker-b.log" || true) | xargs -r -n1 basename | sed 's/\.log$//' | paste -sd' ' -)
[ -n "$ran_on" ] && [ "$ran_on" != "worker-a worker-b" ] || fail "the job's start is logged by '${ran_on:-no worker}'"
[ "$TRAINED" != "$BASELINE" ] || fail "the job published $TRAINED, the version already served"
info "succeeded on $ran_on in $((SECONDS - started))s: published $TRAINED"
expect 200 GET "/models/$TRAINED"
[ "$(json 'd["job"]')" = "$JOB" ] || fail "/models/$TRAINED does not name the job: $(head -c 300 "$TMP/body")"
info "/models/$TRAINED names the job; test accuracy $(json 'd.get("test_accuracy")') on the tiny set"
if [ "$REGISTRY_KIND" = s3 ]; then
  read -r -a listed <<<"$(bucket_versions)"
  case " ${listed[*]:1} " in *" $TRAINED "*) ;; *) fail "$TRAINED is not in the bucket ${listed[0]}: ${listed[*]:1}" ;; esac
  on_volume=$(volume_versions)
  case " $on_volume " in *" $TRAINED "*) fail "$TRAINED was written to the cluster-models volume too ($on_volume)" ;; esac
  info "$TRAINED is in ${listed[0]} (${listed[*]:1}); the cluster-models volume holds only '${on_volume}'"
fi

step "promote $TRAINED through the load balancer: both replicas serve it"
expect 200 POST "/models/$TRAINED/promote" "${AUTH[@]}"
info "promote: $(cat "$TMP/body")"
started=$SECONDS
deadline=$((SECONDS + 60))
for replica in api-a api-b; do
  until [ "$(replica_ready "$replica" | cut -d' ' -f1)" = "$TRAINED" ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "$replica's /readyz still reports $(replica_ready "$replica") 60s after the promote (the pointer watch alone re-reads it every 5 s)"
    sleep 0.2
  done
done
# (each look is a `compose exec`, seconds on a busy host: this bounds the switch, it does not time it)
info "api-a: $(replica_ready api-a), api-b: $(replica_ready api-b) (version generation), seen $((SECONDS - started))s after the promote"
answered=$(predict_all "$TRAINED")
[ "$answered" = "a b" ] || fail "after the promote only replica(s) '$answered' answered"
info "eight predictions of $TRAINED, answered by replicas: $answered"

step "down -v"
started=$SECONDS
compose down -v --remove-orphans --timeout 20
left=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" | wc -l)
[ "$left" -eq 0 ] || fail "$left containers left after down"
info "down in $((SECONDS - started))s"
