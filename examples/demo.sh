#!/usr/bin/env bash
# `make demo`: start the service in the background (on port 8000, or a free one when 8000 is taken),
# wait until it is ready, read the example images with the command-line client, print the answers,
# and stop the service. The exit status says whether all of that worked (the client's exit codes:
# `python -m client --help`).
#
# It serves what `make run` serves (MNIST_MODELS_DIR, default state/models/, a copy of the shipped
# models/ made on first use); its other state (job records, the generated token, the log) goes to a
# temporary folder, removed at the end, so it never touches the state of a service you run yourself. PY names the Python to use, DEMO_PORT a port, DEMO_READY_S how long to wait.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
READY_S=${DEMO_READY_S:-60}

port=${DEMO_PORT:-$("$PY" -c '
import socket
for port in (8000, 0):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(s.getsockname()[1])
        break
')}
state=$(mktemp -d "${TMPDIR:-/tmp}/mnist-demo.XXXXXX")
pid=
stop() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "stopped the service"
  fi
  rm -rf "$state"
}
trap stop EXIT
trap 'exit 130' INT TERM

export MNIST_URL="http://127.0.0.1:$port"
echo "starting the service on $MNIST_URL"
MNIST_HOST=127.0.0.1 MNIST_PORT=$port MNIST_STATE_DIR="$state" "$PY" -m service >"$state/service.log" 2>&1 &
pid=$!
deadline=$((SECONDS + READY_S))
until "$PY" -m client ready --wait 1 --timeout 1 >/dev/null 2>&1; do
  if ! kill -0 "$pid" 2>/dev/null; then
    pid=
    echo "the service stopped before it was ready; the end of its log:" >&2
  elif [ "$SECONDS" -ge "$deadline" ]; then
    echo "the service did not become ready within $READY_S s; the end of its log:" >&2
  else
    continue
  fi
  tail -n 15 "$state/service.log" >&2
  exit 1
done
"$PY" -m client ready
"$PY" -m client predict examples/*.png examples/*.jpg
