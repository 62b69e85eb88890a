#!/usr/bin/env bash
# A real single-node Apache Kafka broker (KRaft, broker+controller in one JVM)
# on 127.0.0.1 for tests and CI, without Docker:
#   bash .ci/kafka.sh fetch         # resolve the broker's jars from Maven Central (cached)
#   bash .ci/kafka.sh start [DIR]   # format + start; prints KAFKA_BOOTSTRAP=127.0.0.1:PORT
#   bash .ci/kafka.sh perf  [DIR]   # raw broker rate: producer and consumer perf tools
#   bash .ci/kafka.sh stop  [DIR]   # SIGTERM, bounded wait, SIGKILL; drops a temp DIR
# How: Maven copies kafka_2.13 + kafka-tools + a log4j2 backend with all their
# transitive jars into $TOLL_CI_CACHE/kafka/<version>/libs (default cache
# ~/.cache/toll-ci); `java -cp libs/* kafka.Kafka` runs the broker. DIR (default
# a fresh temp dir, remembered in the cache) holds server.properties, data/,
# kafka.log, kafka.pid and bootstrap. Ports: KAFKA_PORT (39092) and
# KAFKA_CONTROLLER_PORT (39093). Messages go to stderr; only the start line
# goes to stdout, so `eval "$(bash .ci/kafka.sh start)"` exports nothing else.
set -euo pipefail

KAFKA_VERSION=4.4.0   # newest 4.x on Maven Central that resolved (Dec 2026)
LOG4J_VERSION=2.25.5  # the log4j-core that kafka-server 4.4.0 depends on
HOST=127.0.0.1
PORT="${KAFKA_PORT:-39092}"
CPORT="${KAFKA_CONTROLLER_PORT:-39093}"
CACHE="${TOLL_CI_CACHE:-$HOME/.cache/toll-ci}/kafka"
HOME_DIR="$CACHE/$KAFKA_VERSION"
LIBS="$HOME_DIR/libs"
CURRENT="$CACHE/current"   # the temp DIR of a `start` given no DIR
START_TIMEOUT="${KAFKA_START_TIMEOUT:-60}"
STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"

say() { echo "kafka.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

# Runs a Kafka command-line tool class, bounded by TOOL_TIMEOUT seconds, with
# quiet logging (WARN and up, to stderr).
tool() {
  timeout --foreground -k 5 "${TOOL_TIMEOUT:-300}" java -Xmx256m \
    -Dlog4j2.configurationFile="$HOME_DIR/tools-log4j2.properties" -cp "$LIBS/*" "$@"
}

fetch() {
  [ -f "$HOME_DIR/.complete" ] && { say "jars cached in $LIBS"; return; }
  command -v mvn >/dev/null || die "mvn not found (Maven 3.8+ is needed to fetch)"
  mkdir -p "$HOME_DIR"
  say "resolving kafka_2.13:$KAFKA_VERSION from Maven Central into $HOME_DIR"
  cat >"$HOME_DIR/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>toll-ci</groupId><artifactId>kafka-broker</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>$KAFKA_VERSION</version></dependency>
    <!-- TopicCommand, ProducerPerformance, ConsumerPerformance; Connect is not needed -->
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId>
      <version>$KAFKA_VERSION</version>
      <exclusions><exclusion><groupId>org.apache.kafka</groupId>
        <artifactId>connect-runtime</artifactId></exclusion></exclusions></dependency>
    <!-- Kafka logs through slf4j 1.7; this binds it to log4j2 (core comes with kafka-server) -->
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
  rm -rf "$LIBS"
  mvn -B -q -f "$HOME_DIR/pom.xml" -Dmaven.repo.local="$HOME_DIR/m2" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$LIBS" \
    >"$HOME_DIR/mvn.log" 2>&1 || { cat "$HOME_DIR/mvn.log" >&2
    die "mvn could not resolve the Kafka jars (log above, in $HOME_DIR/mvn.log)"; }
  cat >"$HOME_DIR/tools-log4j2.properties" <<'EOF'
status = warn
appender.err.type = Console
appender.err.name = err
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.err.ref = err
EOF
  touch "$HOME_DIR/.complete"
  say "fetched $(find "$LIBS" -name '*.jar' | wc -l) jars ($(du -sh "$HOME_DIR" | cut -f1) with the Maven repo)"
}

# Succeeds when something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

pid_alive() { [ -f "$1/kafka.pid" ] && kill -0 "$(cat "$1/kafka.pid")" 2>/dev/null; }

# The state dir of stop/perf: the argument, or the temp dir of the last start.
state_dir() {
  if [ -n "${1:-}" ]; then echo "$1"
  elif [ -f "$CURRENT" ]; then cat "$CURRENT"; fi
}

start() {
  command -v java >/dev/null || die "java not found (Java 17+ is needed)"
  local dir="${1:-}" temp=0 running
  running="${dir:-$(state_dir)}"
  [ -n "$running" ] && pid_alive "$running" &&
    die "a broker is already running from $running (pid $(cat "$running/kafka.pid")); stop it first"
  port_open "$PORT" && die "port $HOST:$PORT is taken (set KAFKA_PORT)"
  port_open "$CPORT" && die "port $HOST:$CPORT is taken (set KAFKA_CONTROLLER_PORT)"
  fetch
  [ -n "$dir" ] || { dir="$(mktemp -d "${TMPDIR:-/tmp}/toll-kafka.XXXXXX")"; temp=1; }
  mkdir -p "$dir"; dir="$(cd "$dir" && pwd)"
  rm -rf "$dir/data" "$dir/kafka.log" "$dir/kafka.out" "$dir/kafka.pid" "$dir/bootstrap"
  [ "$temp" = 1 ] && { touch "$dir/.temp"; echo "$dir" >"$CURRENT"; }
  cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CPORT
advertised.listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CPORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
controller.quorum.bootstrap.servers=$HOST:$CPORT
log.dirs=$dir/data
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
EOF
  cat >"$dir/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $dir/kafka.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
EOF
  local id; id="$(tool kafka.tools.StorageTool random-uuid)"
  # --standalone: this node alone is the (dynamic, KIP-853) controller quorum.
  tool kafka.tools.StorageTool format --standalone -t "$id" -c "$dir/server.properties" \
    >"$dir/format.out" 2>&1 || { cat "$dir/format.out" >&2; die "formatting $dir/data failed"; }
  # setsid + own stdio: the broker outlives this script and never holds its stdout.
  setsid java -Xms512m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$dir/log4j2.properties" \
    -cp "$LIBS/*" kafka.Kafka "$dir/server.properties" \
    </dev/null >"$dir/kafka.out" 2>&1 &
  echo $! >"$dir/kafka.pid"
  echo "$HOST:$PORT" >"$dir/bootstrap"
  say "broker pid $! starting in $dir (log: $dir/kafka.log)"
  local deadline=$((SECONDS + START_TIMEOUT))
  until port_open "$PORT" && TOOL_TIMEOUT=20 tool org.apache.kafka.tools.TopicCommand \
      --bootstrap-server "$HOST:$PORT" --list >/dev/null 2>&1; do
    pid_alive "$dir" || { tail -n 30 "$dir/kafka.out" "$dir/kafka.log" >&2 2>/dev/null || true
      die "the broker exited during start-up (logs in $dir)"; }
    [ "$SECONDS" -lt "$deadline" ] || { tail -n 30 "$dir/kafka.log" >&2 || true; stop "$dir"
      die "the broker did not answer within ${START_TIMEOUT}s"; }
    sleep 1
  done
  say "broker ready after ${SECONDS}s"
  echo "KAFKA_BOOTSTRAP=$HOST:$PORT"
}

stop() {
  local dir; dir="$(state_dir "${1:-}")"
  [ -n "$dir" ] || { say "no DIR given and no broker started without one: nothing to stop"; return 0; }
  if pid_alive "$dir"; then
    local pid deadline=$((SECONDS + STOP_TIMEOUT)); pid="$(cat "$dir/kafka.pid")"
    kill -TERM "$pid"
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
      say "broker pid $pid ignored SIGTERM for ${STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    say "broker pid $pid stopped"
  else say "no broker running from $dir"; fi
  rm -f "$dir/kafka.pid"
  if [ -f "$dir/.temp" ]; then
    rm -rf "$dir"; say "removed $dir"
    [ -f "$CURRENT" ] && [ "$(cat "$CURRENT")" = "$dir" ] && rm -f "$CURRENT"
  fi
  return 0
}

perf() {
  local dir; dir="$(state_dir "${1:-}")"
  [ -n "$dir" ] || die "no DIR given and no broker started without one"
  pid_alive "$dir" || die "no broker running from $dir (run start first)"
  local bs topic records="${PERF_RECORDS:-1000000}" size="${PERF_RECORD_SIZE:-100}"
  bs="$(cat "$dir/bootstrap")"; topic="perf-$(date +%s)"
  tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$bs" --create \
    --topic "$topic" --partitions 4 --replication-factor 1 >&2
  echo "== producer: $records records of $size bytes, acks=all, 4 partitions"
  tool org.apache.kafka.tools.ProducerPerformance --topic "$topic" \
    --num-records "$records" --record-size "$size" --throughput -1 \
    --producer-props bootstrap.servers="$bs" acks=all | tail -n 1
  echo "== consumer"
  tool org.apache.kafka.tools.ConsumerPerformance --bootstrap-server "$bs" \
    --topic "$topic" --num-records "$records" --timeout 60000
  tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$bs" --delete --topic "$topic" >&2
}

case "${1:-}" in
  fetch) fetch ;;
  start) start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  perf) perf "${2:-}" ;;
  *) echo "usage: bash .ci/kafka.sh fetch|start [DIR]|stop [DIR]|perf [DIR]" >&2; exit 2 ;;
esac
