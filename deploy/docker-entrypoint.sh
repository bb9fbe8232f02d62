#!/bin/sh
# Entry point of the image (every service, the Envoy config render, the MCP server): secrets handed over as
# files (Docker / Compose secrets, mounted Kubernetes Secrets) become the variables the services read.
# For each NAME below, NAME_FILE=<path> sets NAME to the file's content (trailing newlines dropped);
# NAME and NAME_FILE together are an error. Then it runs the command (exec: signals reach the service).
set -eu
for name in CONTROL_API_TOKEN TT_INTERNAL_TOKEN TT_INSIDERS_API_TOKEN TT_ALERT_WEBHOOK_SECRET DATABASE_URL REDIS_URL; do
    file=$(printenv "${name}_FILE" || true)
    [ -n "$file" ] || continue
    if [ -n "$(printenv "$name" || true)" ]; then
        echo "entrypoint: both $name and ${name}_FILE are set; set one" >&2
        exit 2
    fi
    if ! value=$(cat -- "$file"); then
        echo "entrypoint: ${name}_FILE=$file cannot be read" >&2
        exit 2
    fi
    export "$name=$value"
    unset "${name}_FILE"
done
exec "$@"
