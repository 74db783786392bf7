#!/usr/bin/env bash
# Docker smoke test (`make docker-smoke`, and .ci/run when a Docker engine can start):
#   build the image with compose, `up -d` the API, wait for the healthcheck, read the generated
#   token from the log, predict a digit, train + promote a small version with the trainer service,
#   see the API switch to it without a restart, promote/roll back over HTTP, metrics, W1 picture,
#   a graceful stop and a restart on the same volumes, then `down -v`.
#
# Works with either compose: $COMPOSE ("docker-compose" for v1.29, "docker compose" for v2; as
# exported by `docker-local.sh env`), else whichever is installed. Each run has its own compose
# project, image tag and free host port, so runs from several checkouts do not collide, and it
# removes everything it created on exit (set SMOKE_KEEP=1 to keep the image for a look).
#
# The training step needs the real MNIST files: MNIST_DATA_DIR=<folder with the four
# *-ubyte.gz files> (.ci/run exports ../shared/data/mnist when it exists). Without
# it the step is skipped with a message (SMOKE_DOWNLOAD=1 lets the trainer download MNIST instead).
#
# Knobs: COMPOSE, BASE_IMAGE, DOCKER_BUILD_NETWORK, MNIST_DATA_DIR, SMOKE_PORT, SMOKE_TIMEOUT
# (seconds for each wait, default 180), SMOKE_DOWNLOAD, SMOKE_KEEP.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$(pwd)
TIMEOUT=${SMOKE_TIMEOUT:-180}

step() { printf '\n=== docker smoke: %s (%s)\n' "$*" "$(date +%T)"; }
info() { printf '    %s\n' "$*"; }
fail() {
  printf '\n!!! docker smoke FAILED: %s\n' "$*" >&2
  exit 1
}

# --- preflight ----------------------------------------------------------------------------------
step "preflight"
# shellcheck source=preflight.sh
source "$ROOT/tests/docker/preflight.sh"
info "engine:  $(docker version -f '{{.Server.Version}}' 2>/dev/null)"

# The real MNIST for the training step, as an absolute path (compose resolves relative ones
# against the compose file's folder, and MNIST_DATA_DIR may be relative).
HOST_DATA=""
if [ -n "${MNIST_DATA_DIR:-}" ]; then
  [ -f "$MNIST_DATA_DIR/train-images-idx3-ubyte.gz" ] ||
    fail "MNIST_DATA_DIR=$MNIST_DATA_DIR has no train-images-idx3-ubyte.gz"
  HOST_DATA=$(cd "$MNIST_DATA_DIR" && pwd)
fi

# Start from a known configuration: no MNIST_* from the caller's shell reaches compose (a preset
# MNIST_TOKEN, say, would keep the token out of the log this test reads it from).
while read -r name; do unset "$name"; done < <(compgen -e | grep '^MNIST_' || true)

PROJECT="mnistsmoke$(date +%s)$$"
PORT=${SMOKE_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
BASE="http://127.0.0.1:$PORT"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/mnist-smoke.XXXXXX")
export MNIST_IMAGE="mnist-service:smoke-$PROJECT"
export MNIST_PUBLISH="127.0.0.1:$PORT"
info "project: $PROJECT  image: $MNIST_IMAGE  url: $BASE"
info "base image: ${BASE_IMAGE:-python:3.12-slim (default)}"

compose() { "${COMPOSE_CMD[@]}" -p "$PROJECT" -f "$ROOT/docker-compose.yml" "$@"; }

cleanup() {
  local rc=$?
  set +e
  if [ "$rc" -ne 0 ]; then
    printf '\n--- last API log lines (exit status %s) ---\n' "$rc" >&2
    compose logs --no-color --tail=60 api >&2 2>&1
  fi
  step "cleanup: down -v"
  compose --profile train down -v --remove-orphans --timeout 10 >/dev/null 2>&1 ||
    compose down -v --remove-orphans --timeout 10 >/dev/null 2>&1
  # Belt and braces for one-off `run` containers or anything an interrupted run left behind.
  local label="label=com.docker.compose.project=$PROJECT"
  docker ps -aq --filter "$label" | xargs -r docker rm -f >/dev/null 2>&1
  docker volume ls -q --filter "$label" | xargs -r docker volume rm >/dev/null 2>&1
  docker network ls -q --filter "$label" | xargs -r docker network rm >/dev/null 2>&1
  if [ -z "${SMOKE_KEEP:-}" ]; then
    # --no-prune keeps the untagged layers: the next build still hits the layer cache.
    docker rmi --no-prune "$MNIST_IMAGE" >/dev/null 2>&1
  else
    info "kept image $MNIST_IMAGE (SMOKE_KEEP)"
  fi
  rm -rf "$TMP"
  if [ "$rc" -eq 0 ]; then step "PASSED"; else printf '\n!!! docker smoke FAILED (exit status %s)\n' "$rc" >&2; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# http METHOD PATH [curl args...]: prints the status code, the body goes to $TMP/body.
http() {
  local method=$1 path=$2
  shift 2
  : >"$TMP/body"
  # On a connection error curl still prints 000 as the code (and says why on stderr).
  curl -sS -o "$TMP/body" -w '%{http_code}' -X "$method" --max-time 30 "$@" "$BASE$path" || true
}
expect() { # expect STATUS METHOD PATH [curl args...]
  local want=$1 got
  shift
  got=$(http "$@")
  [ "$got" = "$want" ] || fail "$1 $2: expected HTTP $want, got $got: $(head -c 400 "$TMP/body")"
}
json() { # json EXPR: evaluate EXPR on the last body (as `d`), print the result
  python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$TMP/body" "$1"
}
is_png() { python3 -c 'import sys; sys.exit(open(sys.argv[1], "rb").read(8) != b"\x89PNG\r\n\x1a\n")' "$1"; }
ready_version() { # the version /readyz reports, or "none"
  if [ "$(http GET /readyz)" = 200 ]; then json 'd["version"]'; else echo none; fi
}
wait_version() { # wait_version V: until /readyz reports V
  local want=$1 deadline=$((SECONDS + TIMEOUT)) got
  while :; do
    got=$(ready_version)
    [ "$got" = "$want" ] && return 0
    [ "$SECONDS" -lt "$deadline" ] || fail "/readyz still reports '$got' after ${TIMEOUT}s, expected $want"
    sleep 0.5
  done
}
container_state() {
  docker inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}no-healthcheck{{end}}' "$1" 2>/dev/null ||
    echo gone gone
}
wait_health() { # wait_health CONTAINER WANT [unhealthy-ok]: poll Docker's health status until WANT
  local cid=$1 want=$2 unhealthy_ok=${3:-} deadline=$((SECONDS + TIMEOUT)) status health
  while :; do
    read -r status health < <(container_state "$cid") || true
    [ "$health" = "$want" ] && return 0
    [ "$status" = running ] || fail "the API container is $status (health: $health)"
    [ "$health" = unhealthy ] && [ -z "$unhealthy_ok" ] && fail "the API container is unhealthy: $(docker inspect -f '{{range .State.Health.Log}}{{.Output}}{{end}}' "$cid" | tail -c 400)"
    [ "$SECONDS" -lt "$deadline" ] || fail "health is still '$health' after ${TIMEOUT}s, expected $want"
    sleep 1
  done
}
predict() { # predict EXPECTED_VERSION: post the digit, check the answer
  expect 200 POST /predict -F "file=@$TMP/digit.png;type=image/png"
  local version digit
  version=$(json 'd["version"]')
  digit=$(json 'd["predictions"][0]["digit"]')
  json 'len(d["predictions"][0]["probabilities"]) == 10 and abs(sum(d["predictions"][0]["probabilities"]) - 1) < 1e-3' | grep -qx True ||
    fail "/predict: expected 10 probabilities summing to 1: $(head -c 400 "$TMP/body")"
  [ "$version" = "$1" ] || fail "/predict answered with version $version, expected $1"
  info "/predict -> digit $digit (confidence $(json 'round(d["predictions"][0]["confidence"], 3)'), version $version)"
  [ "$digit" = 1 ] || info "note: the drawn '1' was read as $digit (a weak model can do that; not a failure)"
}

# --- build --------------------------------------------------------------------------------------
step "build the image: $COMPOSE build api"
started=$SECONDS
compose build api
info "built in $((SECONDS - started))s; image size: $(docker image inspect -f '{{.Size}}' "$MNIST_IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}')"
[ "$(docker image inspect -f '{{.Config.User}}' "$MNIST_IMAGE")" = app ] || fail "the image does not run as the 'app' user"

BASELINE=none
if docker run --rm --entrypoint python "$MNIST_IMAGE" -c 'import json, sys; print(json.load(open("/app/models/mnist/current"))["version"])' >"$TMP/baseline" 2>/dev/null; then
  BASELINE=$(cat "$TMP/baseline")
  info "the image ships the baseline model: mnist $BASELINE"
else
  info "NOTE: the image has no baseline model (models/mnist/current is not in the checkout yet):"
  info "      the API will answer 503 on /readyz until the training step below promotes a version"
fi
if [ -z "$HOST_DATA" ] && [ "$BASELINE" = none ] && [ -z "${SMOKE_DOWNLOAD:-}" ]; then
  fail "no baseline model in the image and no MNIST_DATA_DIR to train one: nothing to serve (set MNIST_DATA_DIR or SMOKE_DOWNLOAD=1)"
fi

# --- up -----------------------------------------------------------------------------------------
step "start the API: $COMPOSE up -d"
compose up -d
CID=$(compose ps -q api)
[ -n "$CID" ] || fail "no api container after up -d"
n=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" | wc -l)
[ "$n" -eq 1 ] || fail "up -d started $n containers; only the api should start (trainer is in a profile)"
[ "$(docker exec "$CID" id -u)" != 0 ] || fail "the API runs as root"
info "container ${CID:0:12} runs as $(docker exec "$CID" id -un); only the api started"

if [ "$BASELINE" != none ]; then
  step "wait for the healthcheck (docker inspect, up to ${TIMEOUT}s)"
  started=$SECONDS
  wait_health "$CID" healthy
  info "healthy after $((SECONDS - started))s"
  [ "$(ready_version)" = "$BASELINE" ] || fail "/readyz does not serve the baseline $BASELINE: $(cat "$TMP/body")"
  info "/readyz: $(cat "$TMP/body")"
else
  step "wait for /livez (no model yet, so no healthy state)"
  deadline=$((SECONDS + TIMEOUT))
  until [ "$(http GET /livez)" = 200 ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "/livez does not answer after ${TIMEOUT}s"
    read -r status _ < <(container_state "$CID") || true
    [ "$status" = running ] || fail "the API container is $status"
    sleep 1
  done
  expect 503 GET /readyz
  info "/livez 200, /readyz 503: $(cat "$TMP/body")"
fi

step "read the generated token from the log"
deadline=$((SECONDS + 30))
TOKEN=""
until [ -n "$TOKEN" ]; do
  TOKEN=$(compose logs --no-color api 2>&1 | sed -n 's/.*MNIST_TOKEN=\([A-Za-z0-9_-]\{16,\}\).*/\1/p' | tail -1)
  [ -n "$TOKEN" ] && break
  [ "$SECONDS" -lt "$deadline" ] || fail "no 'MNIST_TOKEN=' line in the API log"
  sleep 1
done
info "log line: $(compose logs --no-color api 2>&1 | grep -m1 'MNIST_TOKEN=' | sed 's/MNIST_TOKEN=.*/MNIST_TOKEN=<redacted>/')"
printed=$(compose exec -T api python -m service token)
[ "$printed" = "$TOKEN" ] || fail "'python -m service token' in the container does not print the logged token"
info "python -m service token prints it too"
expect 401 POST /models/rollback
expect 403 POST /models/rollback -H "Authorization: Bearer wrong-$TOKEN"
info "mutating endpoints refuse no token (401) and a wrong one (403)"

step "draw a digit with the image's Pillow"
docker exec "$CID" python -c '
import io, sys
from PIL import Image, ImageDraw
img = Image.new("L", (96, 96), 255)          # dark ink on white paper, like a scan
ImageDraw.Draw(img).line([(50, 12), (46, 84)], fill=0, width=9)  # a "1"
buf = io.BytesIO()
img.save(buf, "PNG")
sys.stdout.buffer.write(buf.getvalue())
' >"$TMP/digit.png"
is_png "$TMP/digit.png" || fail "could not make a PNG"
info "$(wc -c <"$TMP/digit.png") bytes"

if [ "$BASELINE" != none ]; then
  step "predict with the baseline"
  predict "$BASELINE"
fi

# --- train with the trainer service ------------------------------------------------------------
TRAINED=none
train_args=(train --preset fast --hidden 16 --epochs 1 --promote --quiet)
if [ -n "$HOST_DATA" ]; then
  export MNIST_HOST_DATA="$HOST_DATA"
  train_args+=(--data-dir /mnist)
  how="MNIST mounted read-only from $HOST_DATA"
elif [ -n "${SMOKE_DOWNLOAD:-}" ]; then
  how="MNIST downloaded into the data volume"
else
  how=""
fi
if [ -n "$how" ]; then
  step "train and promote with the trainer service ($how)"
  info "$COMPOSE run --rm -T trainer ${train_args[*]}"
  before=$(ready_version)
  started=$SECONDS
  if ! compose run --rm -T trainer "${train_args[@]}" 2>&1 | sed 's/^/    | /'; then
    fail "the trainer service failed (output above)"
  fi
  info "trained in $((SECONDS - started))s"

  step "wait for the API to switch (no restart)"
  deadline=$((SECONDS + TIMEOUT))
  while TRAINED=$(ready_version) && [ "$TRAINED" = "$before" ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "/readyz still reports $before ${TIMEOUT}s after the promotion"
    sleep 0.5
  done
  info "/readyz: $before -> $TRAINED"
  [ "$(docker inspect -f '{{.RestartCount}}' "$CID")" = 0 ] || fail "the API container restarted"
  if [ "$BASELINE" = none ]; then
    # It may have been marked unhealthy while it had no model; the next check turns it healthy.
    wait_health "$CID" healthy unhealthy-ok
    info "healthcheck: healthy"
  fi
  predict "$TRAINED"

  step "promote and roll back over HTTP (with the token)"
  if [ "$BASELINE" != none ]; then
    expect 200 POST /models/rollback -H "Authorization: Bearer $TOKEN"
    info "rollback: $(cat "$TMP/body")"
    wait_version "$BASELINE"
    predict "$BASELINE"
  fi
  expect 200 POST "/models/$TRAINED/promote" -H "Authorization: Bearer $TOKEN"
  info "promote: $(cat "$TMP/body")"
  wait_version "$TRAINED"
else
  step "SKIPPED: the training step (set MNIST_DATA_DIR=<folder with the MNIST .gz files>, or SMOKE_DOWNLOAD=1 to download)"
fi
SERVING=$(ready_version)

# --- the rest of the surface --------------------------------------------------------------------
step "models, metrics, W1 picture"
expect 200 GET /models
info "/models: current $(json 'd["current"]'), versions $(json '[v["version"] for v in d["versions"]]')"
expect 200 GET /metrics
grep -q '^mnist_predictions_total' "$TMP/body" || fail "/metrics has no mnist_predictions_total"
grep -q '^http_requests_total' "$TMP/body" || fail "/metrics has no http_requests_total"
info "/metrics: $(grep -c '^[a-z]' "$TMP/body") samples"
expect 200 GET /weights/w1.png
is_png "$TMP/body" || fail "/weights/w1.png is not a PNG: $(head -c 200 "$TMP/body")"
info "/weights/w1.png: $(wc -c <"$TMP/body") bytes"

# --- graceful stop, restart on the same volumes ----------------------------------------------------
step "graceful stop (SIGTERM, stop_grace_period 30s)"
started=$SECONDS
compose stop api
took=$((SECONDS - started))
code=$(docker inspect -f '{{.State.ExitCode}}' "$CID")
info "stopped in ${took}s, exit code $code"
[ "$code" = 0 ] || fail "the API exited with $code on SIGTERM (137 would mean it was killed)"
[ "$took" -lt 25 ] || fail "stopping took ${took}s: SIGTERM is not handled promptly"

step "restart: state and models survive in the volumes"
compose start api
wait_health "$CID" healthy
[ "$(ready_version)" = "$SERVING" ] || fail "after the restart /readyz serves $(ready_version), expected $SERVING"
# Promoting the current version is a 409 `already_current`; it gets that far only with a valid token.
expect 409 POST "/models/$SERVING/promote" -H "Authorization: Bearer $TOKEN"
grep -q '"already_current"' "$TMP/body" || fail "promoting the current $SERVING: $(cat "$TMP/body")"
info "healthy again, still $SERVING, the stored token still works"
predict "$SERVING"
