#!/usr/bin/env bash
# The telemetry back end of tests and CI on 127.0.0.1, without Docker: an
# OpenTelemetry Collector (otel-collector.yaml) that the runners send OTLP to,
# Prometheus scraping the collector every second, and Jaeger v2 holding the
# traces in memory:
#   bash .ci/otel.sh build         # build the three binaries from Go modules (cached)
#   bash .ci/otel.sh start [DIR]   # start all three; prints `export NAME=VALUE` lines
#   bash .ci/otel.sh stop  [DIR]   # SIGTERM, bounded wait, SIGKILL; drops a temp DIR
#   bash .ci/otel.sh check         # validate otel-collector.yaml, docker-compose.yml
#                                  # and the Grafana dashboards
#   bash .ci/otel.sh prune         # drop the Go caches (GBs), keep the binaries
# How: each program is built with the machine's Go from a module pinned under
# .ci/otel/ (the collector by the collector builder from
# .ci/otel/builder-config.yaml; Prometheus without its service discoveries
# and web UI; Jaeger from its v2 line). Binaries, Go's module and build
# caches live in $TOLL_CI_CACHE/otel (default ~/.cache/toll-ci); a binary is
# rebuilt only when the files it is built from change. DIR (default a fresh
# temp dir, remembered in the cache) holds prometheus.yml, the Prometheus
# data, one log and one pid file per program. Messages go to stderr; only the
# export lines go to stdout, so `eval "$(bash .ci/otel.sh start)"` sets:
#   OTLP_ENDPOINT          http://127.0.0.1:44317  collector, OTLP/gRPC
#   OTLP_HTTP_ENDPOINT     http://127.0.0.1:44318  collector, OTLP/HTTP (/v1/traces, /v1/metrics)
#   COLLECTOR_METRICS_URL  http://127.0.0.1:48889/metrics  what Prometheus scrapes
#   PROMETHEUS_URL         http://127.0.0.1:49090  /api/v1/query
#   JAEGER_QUERY_URL       http://127.0.0.1:46686  /api/v3/traces/{trace_id}
#   OTEL_DIR               DIR
# Ports are the defaults below, each overridable by its variable.
set -euo pipefail

CI_DIR="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$CI_DIR")"
SPEC="$CI_DIR/otel"
HOST=127.0.0.1
CACHE="${TOLL_CI_CACHE:-$HOME/.cache/toll-ci}/otel"
BIN="$CACHE/bin"
CURRENT="$CACHE/current"   # the temp DIR of a `start` given no DIR
START_TIMEOUT="${OTEL_START_TIMEOUT:-60}"
STOP_TIMEOUT="${OTEL_STOP_TIMEOUT:-20}"
PROGRAMS="collector prometheus jaeger"

export COLLECTOR_OTLP_GRPC_PORT="${COLLECTOR_OTLP_GRPC_PORT:-44317}"
export COLLECTOR_OTLP_HTTP_PORT="${COLLECTOR_OTLP_HTTP_PORT:-44318}"
export COLLECTOR_PROMETHEUS_PORT="${COLLECTOR_PROMETHEUS_PORT:-48889}"
export COLLECTOR_METRICS_PORT="${COLLECTOR_METRICS_PORT:-48888}"
export COLLECTOR_HEALTH_PORT="${COLLECTOR_HEALTH_PORT:-43133}"
PROMETHEUS_PORT="${PROMETHEUS_PORT:-49090}"
export JAEGER_OTLP_GRPC_PORT="${JAEGER_OTLP_GRPC_PORT:-44327}"
export JAEGER_OTLP_HTTP_PORT="${JAEGER_OTLP_HTTP_PORT:-44328}"
export JAEGER_QUERY_PORT="${JAEGER_QUERY_PORT:-46686}"
export JAEGER_QUERY_GRPC_PORT="${JAEGER_QUERY_GRPC_PORT:-46685}"
export JAEGER_HEALTH_PORT="${JAEGER_HEALTH_PORT:-43134}"
ALL_PORTS="$COLLECTOR_OTLP_GRPC_PORT $COLLECTOR_OTLP_HTTP_PORT $COLLECTOR_PROMETHEUS_PORT
  $COLLECTOR_METRICS_PORT $COLLECTOR_HEALTH_PORT $PROMETHEUS_PORT $JAEGER_OTLP_GRPC_PORT
  $JAEGER_OTLP_HTTP_PORT $JAEGER_QUERY_PORT $JAEGER_QUERY_GRPC_PORT $JAEGER_HEALTH_PORT"

say() { echo "otel.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

# The machine's Go with module and build caches of its own, so that the cache
# directory holds everything these builds need and `rm -rf` clears it.
with_go_env() {
  GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" \
    GOFLAGS="${GOFLAGS:-} -modcacherw -buildvcs=false" CGO_ENABLED=0 "$@"
}
gocmd() { with_go_env go "$@"; }

# A short digest of the given files: the cache key of what is built from them.
key_of() { cat "$@" | sha256sum | cut -c1-12; }

# Builds $1 into $BIN/$1-KEY unless it is there, and prints that path.
# $2 is the key; the rest is the build command, run with the target path
# appended. A failed build leaves no binary behind. One build at a time on a
# machine: a second caller waits for the first and then finds its binary.
build_one() {
  local name="$1" key="$2"; shift 2
  local out="$BIN/$name-$key"
  mkdir -p "$BIN"
  exec 9>"$BIN/.lock"; flock 9
  if [ ! -x "$out" ]; then
    say "building $name (first time on this machine: minutes)"
    local started=$SECONDS log="$BIN/$name-$key.log"
    if ! "$@" "$out.tmp" >"$log" 2>&1; then
      tail -n 40 "$log" >&2; rm -f "$out.tmp"; die "building $name failed (log: $log)"
    fi
    mv "$out.tmp" "$out"
    say "built $name in $((SECONDS - started))s ($(du -h "$out" | cut -f1))"
  fi
  echo "$out"
}

# Each builder takes the output path as its last argument.
make_prometheus() {
  # remove_all_sd leaves only static, file and HTTP discovery: tests need no
  # cloud SDKs. The web UI is left out (its assets come from npm); the API is whole.
  gocmd -C "$SPEC/prometheus" build -trimpath -ldflags='-s -w' -tags remove_all_sd \
    -o "$1" github.com/prometheus/prometheus/cmd/prometheus
}
make_jaeger() {
  gocmd -C "$SPEC/jaeger" build -trimpath -ldflags='-s -w' \
    -o "$1" github.com/jaegertracing/jaeger/cmd/jaeger
}
make_collector() {
  # The builder generates the collector's sources under ./src (output_path),
  # resolves its modules and builds it there; then the binary moves out.
  local work="$CACHE/collector-build"
  rm -rf "$work"; mkdir -p "$work"
  gocmd -C "$SPEC/builder" build -o "$work/ocb" go.opentelemetry.io/collector/cmd/builder
  (cd "$work" && with_go_env ./ocb --config "$SPEC/builder-config.yaml")
  mv "$work/src/otelcol-toll" "$1"
}
make_composecheck() {
  gocmd -C "$SPEC/composecheck" build -o "$1" .
}

bin_prometheus() {
  build_one prometheus "$(key_of "$SPEC/prometheus/go.mod" "$SPEC/prometheus/go.sum")" make_prometheus
}
bin_jaeger() {
  build_one jaeger "$(key_of "$SPEC/jaeger/go.mod" "$SPEC/jaeger/go.sum")" make_jaeger
}
bin_collector() {
  build_one collector "$(key_of "$SPEC/builder-config.yaml" "$SPEC/builder/go.mod")" \
    make_collector
}
bin_composecheck() {
  build_one composecheck "$(key_of "$SPEC/composecheck/"{go.mod,go.sum,main.go})" \
    make_composecheck
}

build() {
  command -v go >/dev/null || die "go not found (Go 1.26 is needed to build)"
  bin_collector >/dev/null
  bin_prometheus >/dev/null
  bin_jaeger >/dev/null
  say "binaries in $BIN; cache $(du -sh "$CACHE" | cut -f1) ($(du -sh "$CACHE/go" | cut -f1) of Go caches)"
}

# After a build only the binaries are needed; Go's caches only make a rebuild
# after a version change faster (and a cold build of all three takes minutes).
prune() {
  local before; before="$(du -sh "$CACHE" 2>/dev/null | cut -f1)"
  rm -rf "$CACHE/go" "$CACHE/collector-build"
  say "dropped the Go caches: $before -> $(du -sh "$CACHE" 2>/dev/null | cut -f1)"
}

# Succeeds when something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# Succeeds when GET $1 answers 200.
http_ok() { curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; }

pid_alive() { [ -f "$1/$2.pid" ] && kill -0 "$(cat "$1/$2.pid")" 2>/dev/null; }

any_alive() {
  local program
  for program in $PROGRAMS; do pid_alive "$1" "$program" && return 0; done
  return 1
}

# The state dir of stop: the argument, or the temp dir of the last start.
state_dir() {
  if [ -n "${1:-}" ]; then echo "$1"
  elif [ -f "$CURRENT" ]; then cat "$CURRENT"; fi
}

# Starts program $2 in the background from state dir $1 with the remaining
# arguments as its command line: its own session, stdio to DIR/$2.log.
launch() {
  local dir="$1" name="$2"; shift 2
  setsid "$@" </dev/null >"$dir/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
  say "$name pid $! starting (log: $dir/$name.log)"
}

# Waits until each URL answers 200 while program $2 runs, or fails the start.
await_healthy() {
  local dir="$1" program="$2" url; shift 2
  local deadline=$((SECONDS + START_TIMEOUT))
  for url in "$@"; do
    until http_ok "$url"; do
      pid_alive "$dir" "$program" || { tail -n 30 "$dir/$program.log" >&2 || true; stop "$dir"
        die "$program exited during start-up (log: $dir/$program.log)"; }
      [ "$SECONDS" -lt "$deadline" ] || { tail -n 30 "$dir/$program.log" >&2 || true
        stop "$dir"; die "$program did not answer $url within ${START_TIMEOUT}s"; }
      sleep 0.1
    done
  done
}

# Waits until Prometheus has scraped the collector once, so that from now on
# a point reaches a query within a batch and a scrape interval. (By default
# Prometheus hands new targets to its scraper only every 5 s; the
# --scrape.discovery-reload-interval above shortens that.)
await_first_scrape() {
  local dir="$1" deadline=$((SECONDS + START_TIMEOUT))
  local url="http://$HOST:$PROMETHEUS_PORT/api/v1/query?query=up%7Bjob%3D%22toll%22%7D"
  until curl -fsS --max-time 2 "$url" 2>/dev/null | grep -q '"1"\]'; do
    [ "$SECONDS" -lt "$deadline" ] || { tail -n 30 "$dir/prometheus.log" >&2 || true
      stop "$dir"; die "Prometheus did not scrape the collector within ${START_TIMEOUT}s"; }
    sleep 0.1
  done
}

start() {
  command -v curl >/dev/null || die "curl not found (the health checks use it)"
  local dir="${1:-}" temp=0 running port started=$SECONDS
  running="${dir:-$(state_dir)}"
  [ -n "$running" ] && any_alive "$running" &&
    die "the telemetry back end is already running from $running; stop it first"
  for port in $ALL_PORTS; do
    port_open "$port" && die "port $HOST:$port is taken (see the port variables in $0)"
  done
  local collector prometheus jaeger
  collector="$(bin_collector)"; prometheus="$(bin_prometheus)"; jaeger="$(bin_jaeger)"

  [ -n "$dir" ] || { dir="$(mktemp -d "${TMPDIR:-/tmp}/toll-otel.XXXXXX")"; temp=1; }
  mkdir -p "$dir"; dir="$(cd "$dir" && pwd)"
  rm -rf "$dir/prometheus-data" "$dir"/*.log "$dir"/*.pid
  [ "$temp" = 1 ] && { touch "$dir/.temp"; mkdir -p "$CACHE"; echo "$dir" >"$CURRENT"; }
  sed -e "s/@COLLECTOR_HOST@/$HOST/g" \
    -e "s/@COLLECTOR_PROMETHEUS_PORT@/$COLLECTOR_PROMETHEUS_PORT/g" \
    -e "s/@COLLECTOR_METRICS_PORT@/$COLLECTOR_METRICS_PORT/g" \
    "$SPEC/prometheus.yml" >"$dir/prometheus.yml"

  # One after the other, each ready before the next: a collector that found
  # no trace store would hold its first spans back for seconds of retry
  # backoff, and a test that sends at once would wait for them.
  JAEGER_HOST=$HOST launch "$dir" jaeger "$jaeger" --config "$SPEC/jaeger.yaml"
  await_healthy "$dir" jaeger "http://$HOST:$JAEGER_HEALTH_PORT/status" \
    "http://$HOST:$JAEGER_QUERY_PORT/api/services"
  COLLECTOR_HOST=$HOST COLLECTOR_TRACES_ENDPOINT="$HOST:$JAEGER_OTLP_GRPC_PORT" \
    launch "$dir" collector "$collector" --config "$ROOT/otel-collector.yaml"
  await_healthy "$dir" collector "http://$HOST:$COLLECTOR_HEALTH_PORT/" \
    "http://$HOST:$COLLECTOR_PROMETHEUS_PORT/metrics"
  launch "$dir" prometheus "$prometheus" --config.file="$dir/prometheus.yml" \
    --storage.tsdb.path="$dir/prometheus-data" --storage.tsdb.retention.time=1d \
    --web.listen-address="$HOST:$PROMETHEUS_PORT" --enable-feature=exemplar-storage \
    --scrape.discovery-reload-interval=200ms
  await_healthy "$dir" prometheus "http://$HOST:$PROMETHEUS_PORT/-/ready"
  await_first_scrape "$dir"
  say "ready after $((SECONDS - started))s"

  echo "export OTLP_ENDPOINT=http://$HOST:$COLLECTOR_OTLP_GRPC_PORT"
  echo "export OTLP_HTTP_ENDPOINT=http://$HOST:$COLLECTOR_OTLP_HTTP_PORT"
  echo "export COLLECTOR_METRICS_URL=http://$HOST:$COLLECTOR_PROMETHEUS_PORT/metrics"
  echo "export PROMETHEUS_URL=http://$HOST:$PROMETHEUS_PORT"
  echo "export JAEGER_QUERY_URL=http://$HOST:$JAEGER_QUERY_PORT"
  echo "export OTEL_DIR=$dir"
}

stop() {
  local dir; dir="$(state_dir "${1:-}")"
  [ -n "$dir" ] || { say "no DIR given and nothing started without one: nothing to stop"; return 0; }
  # All at once: each takes about two seconds to shut down gracefully.
  local program pid pids="" deadline=$((SECONDS + STOP_TIMEOUT))
  for program in $PROGRAMS; do
    if pid_alive "$dir" "$program"; then
      pids="$pids $(cat "$dir/$program.pid")"; kill -TERM "$(cat "$dir/$program.pid")"
    fi
  done
  [ -n "$pids" ] || say "nothing running from $dir"
  for pid in $pids; do
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      say "pid $pid ignored SIGTERM for ${STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  [ -z "$pids" ] || say "stopped pids$pids"
  for program in $PROGRAMS; do rm -f "$dir/$program.pid"; done
  if [ -f "$dir/.temp" ]; then
    rm -rf "$dir"; say "removed $dir"
    [ -f "$CURRENT" ] && [ "$(cat "$CURRENT")" = "$dir" ] && rm -f "$CURRENT"
  fi
  return 0
}

# Every dashboard panel's query sits in targets[].expr and every data source
# is one that grafana/provisioning provides.
check_dashboards() {
  local file bad
  for file in "$ROOT"/grafana/dashboards/*.json; do
    bad="$(jq -r '[.panels[] | select(.type != "row")
        | select((.targets // []) | length == 0 or any(.expr == null or .expr == ""))
        | .title] | join(", ")' "$file")" || die "$file is not valid JSON"
    [ -z "$bad" ] || die "$file: panels without a query: $bad"
    bad="$(jq -r '[.. | objects | select(has("uid") and has("type")) | .uid
        | select(. != "prometheus" and . != "tempo")] | unique | join(", ")' "$file")"
    [ -z "$bad" ] || die "$file: unknown data source uid: $bad"
    say "$(basename "$file"): $(jq '[.panels[].targets[]?.expr] | length' "$file") queries"
  done
}

check() {
  command -v go >/dev/null || die "go not found (Go 1.26 is needed to build)"
  local collector composecheck
  collector="$(bin_collector)"; composecheck="$(bin_composecheck)"
  say "otel-collector.yaml with its defaults (docker-compose.yml)"
  "$collector" validate --config "$ROOT/otel-collector.yaml"
  say "otel-collector.yaml with the test ports"
  COLLECTOR_HOST=$HOST COLLECTOR_TRACES_ENDPOINT="$HOST:$JAEGER_OTLP_GRPC_PORT" \
    "$collector" validate --config "$ROOT/otel-collector.yaml"
  say "docker-compose.yml"
  "$composecheck" -project-dir "$ROOT" "$ROOT/docker-compose.yml"
  command -v jq >/dev/null || die "jq not found (the dashboard check uses it)"
  check_dashboards
  say "all valid"
}

case "${1:-}" in
  build) build ;;
  start) start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  check) check ;;
  prune) prune ;;
  *) echo "usage: bash .ci/otel.sh build|start [DIR]|stop [DIR]|check|prune" >&2; exit 2 ;;
esac
