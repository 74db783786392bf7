# Sourced by the Docker smoke tests after they define `info` and `fail`: the tools they need, an
# engine that answers, and the compose command ($COMPOSE if set, else `docker compose` when it
# works, else `docker-compose`), as the array COMPOSE_CMD.
for tool in docker curl python3; do
  command -v "$tool" >/dev/null || fail "'$tool' is not installed"
done
docker info >/dev/null 2>&1 || fail "no Docker engine answers 'docker info' (try: bash ../shared/tools/docker-local.sh setup base)"
if [ -z "${COMPOSE:-}" ]; then
  if docker compose version >/dev/null 2>&1; then COMPOSE="docker compose"; else COMPOSE="docker-compose"; fi
fi
read -r -a COMPOSE_CMD <<<"$COMPOSE"
"${COMPOSE_CMD[@]}" version >/dev/null 2>&1 || fail "compose command '$COMPOSE' does not work"
info "compose: $COMPOSE ($("${COMPOSE_CMD[@]}" version 2>/dev/null | head -1))"
