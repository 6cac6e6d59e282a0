# shellcheck shell=bash disable=SC2034
# Shared by scripts/cluster and scripts/chaos (sourced, never run): the docker mode's state and
# the project's compose command. The caller sets ROOT and STATE and defines die().
#
# State in $STATE/compose/: etc/ (mounted read-only at /etc/kubernetes in every container: pki/
# and the kubeconfigs, server https://lb:6443), admin.kubeconfig (for this host, server
# https://127.0.0.1:$KL_LB_PORT), cluster.env (what `up` started, for down/status/logs/chaos)
# and, with --workers N > 3, docker-compose.workers.yml.

COMPOSE_DIR="$STATE/compose"
COMPOSE_ENV="$COMPOSE_DIR/cluster.env"
BASE_WORKERS=3

# The compose command: Debian's docker-compose (v1), else `docker compose` (v2); KL_COMPOSE=v1
# or v2 insists on one.
compose_cmd() {
    case "${KL_COMPOSE:-}" in
    v1)
        command -v docker-compose >/dev/null || die "KL_COMPOSE=v1 but docker-compose is not installed"
        COMPOSE=(docker-compose)
        return
        ;;
    v2)
        docker compose version >/dev/null 2>&1 || die "KL_COMPOSE=v2 but docker compose (the CLI plugin) does not answer"
        COMPOSE=(docker compose)
        return
        ;;
    "") ;;
    *) die "KL_COMPOSE must be v1 or v2, got '$KL_COMPOSE'" ;;
    esac
    if command -v docker-compose >/dev/null; then
        COMPOSE=(docker-compose)
    elif docker compose version >/dev/null 2>&1; then
        COMPOSE=(docker compose)
    else
        return 1
    fi
}

docker_answers() {
    command -v docker >/dev/null && timeout 5 docker info >/dev/null 2>&1 && compose_cmd
}

# Loads cluster.env (written by `up`): TOPOLOGY, WORKER_COUNT, KL_IMAGE, KL_LB_PORT, ...
load_compose_env() {
    # shellcheck disable=SC1090
    source "$COMPOSE_ENV"
    compose_cmd || die "neither docker-compose nor docker compose is installed"
}

compose_files() {
    local files=(-f "$ROOT/docker-compose.yml")
    [[ "$TOPOLOGY" == external ]] && files=(-f "$ROOT/docker-compose.external.yml")
    [[ -f "$COMPOSE_DIR/docker-compose.workers.yml" ]] && files+=(-f "$COMPOSE_DIR/docker-compose.workers.yml")
    printf '%s\n' "${files[@]}"
}

# compose ARGS...: the project's compose command, with the variables the files read; bounded
# by COMPOSE_TIMEOUT seconds when set.
compose() {
    local files
    mapfile -t files < <(compose_files)
    local bound=()
    [[ -n "${COMPOSE_TIMEOUT:-}" ]] && bound=(timeout "$COMPOSE_TIMEOUT")
    KL_IMAGE="$KL_IMAGE" KL_COMPOSE_DIR="$COMPOSE_DIR" KL_LB_PORT="$KL_LB_PORT" \
        KL_LB_STATS_PORT="$KL_LB_STATS_PORT" \
        KL_NODE_MONITOR_GRACE_PERIOD="${KL_NODE_MONITOR_GRACE_PERIOD:-40s}" \
        KL_POD_EVICTION_TIMEOUT="${KL_POD_EVICTION_TIMEOUT:-5m}" \
        "${bound[@]}" "${COMPOSE[@]}" --project-directory "$ROOT" -p "$COMPOSE_PROJECT" "${files[@]}" "$@"
}

# The services `up` starts: etcd1..3 (external), master1..3, lb, worker1..N.
compose_services() {
    local i out=()
    [[ "$TOPOLOGY" == external ]] && out+=(etcd1 etcd2 etcd3)
    out+=(master1 master2 master3 lb)
    for ((i = 1; i <= WORKER_COUNT; i++)); do out+=("worker$i"); done
    echo "${out[*]}"
}

# The health of service $1's container: healthy, unhealthy, starting, exited, missing.
service_health() {
    local id
    id="$(compose ps -q "$1" 2>/dev/null | head -n 1)"
    [[ -n "$id" ]] || {
        echo missing
        return
    }
    docker inspect --format '{{if .State.Running}}{{if .State.Health}}{{.State.Health.Status}}{{else}}running{{end}}{{else}}exited{{end}}' "$id" 2>/dev/null || echo missing
}

