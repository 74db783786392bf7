#!/bin/sh
# MinIO's command line as far as docker-compose.s3.yml uses it: `server DIR... [--address [HOST]:PORT]`
# (other flags are accepted and ignored). Serves moto's S3 API on that port (default 9000), in memory.
set -eu
[ "${1:-}" = server ] || exec "$@"
shift
port=9000
while [ $# -gt 0 ]; do
  case "$1" in
    --address) port=${2##*:}; shift 2 ;;
    --address=*) port=${1##*:}; shift ;;
    --*=*) shift ;;
    --console-address | --certs-dir | --config-dir) shift 2 ;;
    *) shift ;;
  esac
done
echo "minio stand-in: moto's S3 server on :$port (objects in memory, any credentials accepted)"
exec moto_server -H 0.0.0.0 -p "$port"
