#!/usr/bin/env bash
# Eddy and Apache Flink (PyFlink with flink-sql-connector-kafka) side by
# side over one Kafka topic of Nexmark bids as JSON (4 partitions):
#   q0     every bid, projected, into a blackhole sink;
#   tumble a 10-second tumbling count and max per auction into a Kafka topic.
# Both engines read the topic from its start to its end now (bounded), so
# each run ends by itself. Figures are wall time and the CPU time (user +
# system) of the engine's whole process tree (bench/kafka/cputime.py), JVM
# start included for Flink; the broker's own CPU is not counted.
#
#   bench/kafka/run.sh [BIDS]        (default 2,000,000 bids)
#
# Needs: ./dev test's Kafka jars (~/.cache/eddy-kafka), a release build of
# eddy (cargo build --release), Python 3 with `pip install apache-flink`
# in $PYFLINK_VENV (default ~/.cache/eddy-bench/pyflink), and Maven for
# the connector jar.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIDS="${1:-2000000}"
EDDY="${EDDY:-${CARGO_TARGET_DIR:-target}/release/eddy}"
VENV="${PYFLINK_VENV:-$HOME/.cache/eddy-bench/pyflink}"
KAFKA_VERSION=$(sed -n '/<artifactId>kafka_2.13</{n;s/.*<version>\(.*\)<\/version>.*/\1/p;}' tests/kafka/pom.xml)
KAFKA_LIB="${EDDY_KAFKA_LIB:-$HOME/.cache/eddy-kafka/$KAFKA_VERSION/lib}"
CONNECTOR_VERSION=5.0.0-2.2
CONNECTOR="$HOME/.cache/eddy-bench/flink-sql-connector-kafka-$CONNECTOR_VERSION.jar"
PORT=19092
CONTROLLER=19093
WORK=$(mktemp -d)
trap 'kill "$BROKER" 2>/dev/null || true; rm -rf "$WORK"' EXIT

[ -x "$EDDY" ] || { echo "build eddy first: cargo build --release" >&2; exit 1; }
if [ ! -f "$CONNECTOR" ]; then
  mvn -q -B org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
    -Dartifact="org.apache.flink:flink-sql-connector-kafka:$CONNECTOR_VERSION" \
    -DoutputDirectory="$(dirname "$CONNECTOR")" >&2
fi

# A single KRaft broker, topics of 4 partitions made on first use.
cat > "$WORK/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$WORK/data
num.partitions=4
auto.create.topics.enable=true
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
JAVA=(java -Xmx1g -cp "$KAFKA_LIB/*")
"${JAVA[@]}" kafka.tools.StorageTool format -t ZWRkeS1iZW5jaC1jbHVzdGVy -c "$WORK/server.properties" >/dev/null
"${JAVA[@]}" kafka.Kafka "$WORK/server.properties" > "$WORK/broker.log" 2>&1 &
BROKER=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.2; done
BOOT=127.0.0.1:$PORT

BID_COLUMNS="auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, \`dateTime\` TIMESTAMP(3), extra STRING"
# Nexmark's bids are 46 of every 50 events.
EVENTS=$(( BIDS * 50 / 46 + 50 ))
load() { # topic, events: writes that many Nexmark events' bids to the topic
  cat > "$WORK/load-$1.sql" <<SQL
CREATE TABLE bid ($BID_COLUMNS) WITH ('connector' = 'nexmark', 'events.num' = '$2');
CREATE TABLE out ($BID_COLUMNS) WITH ('connector' = 'kafka', 'topic' = '$1',
  'properties.bootstrap.servers' = '$BOOT', 'format' = 'json',
  'json.timestamp-format.standard' = 'SQL');
INSERT INTO out SELECT * FROM bid;
SQL
  "$EDDY" run "$WORK/load-$1.sql" >/dev/null
}
echo "loading Nexmark bids into topic 'bids' (4 partitions)" >&2
load bids "$EVENTS"

SOURCE="CREATE TABLE bids ($BID_COLUMNS,
  WATERMARK FOR \`dateTime\` AS \`dateTime\` - INTERVAL '4' SECOND) WITH (
  'connector' = 'kafka', 'topic' = 'bids', 'properties.bootstrap.servers' = '$BOOT',
  'properties.group.id' = 'bench', 'scan.startup.mode' = 'earliest-offset',
  'scan.bounded.mode' = 'latest-offset', 'format' = 'json');"
Q0="CREATE TABLE out0 (auction BIGINT, bidder BIGINT, price BIGINT, \`dateTime\` TIMESTAMP(3), extra STRING)
  WITH ('connector' = 'blackhole');
INSERT INTO out0 SELECT auction, bidder, price, \`dateTime\`, extra FROM bids;"
TUMBLE="CREATE TABLE windows (window_start TIMESTAMP(3), auction BIGINT, bids BIGINT, top BIGINT)
  WITH ('connector' = 'kafka', 'topic' = 'windows-ENGINE', 'properties.bootstrap.servers' = '$BOOT',
        'format' = 'json');
INSERT INTO windows SELECT window_start, auction, COUNT(*), MAX(price)
  FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(\`dateTime\`), INTERVAL '10' SECOND))
  GROUP BY window_start, window_end, auction;"

# Each run's CPU time less that of the same query over a topic of 46 bids
# (start-up, and for Flink the JVM and job submission), as a second rate.
load tiny 50

measure() { # name, command...: runs it over topic 'bids' and 'tiny'; prints a row
  local name=$1; shift
  local sql="${*: -1}" rest=("${@:1:$#-1}")
  sed "s/'topic' = 'bids'/'topic' = 'tiny'/; s/windows-$name/tiny-$name/" "$sql" > "$sql.tiny"
  python3 bench/kafka/cputime.py "$WORK/$name.tiny.out" "${rest[@]}" "$sql.tiny" 2> "$WORK/time" || {
    echo "$name (tiny) failed:" >&2; tail -20 "$WORK/$name.tiny.out" >&2; return 1; }
  read -r _ fixed < <(tail -1 "$WORK/time")
  python3 bench/kafka/cputime.py "$WORK/$name.out" "$@" 2> "$WORK/time" || {
    echo "$name failed:" >&2; tail -20 "$WORK/$name.out" >&2; return 1; }
  read -r wall cpu < <(tail -1 "$WORK/time")
  awk -v n="$name" -v w="$wall" -v c="$cpu" -v f="$fixed" -v b="$BIDS" 'BEGIN {
    printf "| %s | %.2f s | %.2f s | %.2f s | %.0fK | %.0fK | %.0fK |\n",
      n, w, c, f, b / w / 1000, b / c / 1000, b / (c - f) / 1000 }'
}

echo "| run | wall | CPU (process tree) | CPU over 46 bids | bids/s | bids per CPU-second | same, less the 46-bid run |"
echo "|---|---|---|---|---|---|---|"
for query in q0 tumble; do
  sql="$SOURCE"$'\n'"$( [ $query = q0 ] && echo "$Q0" || echo "$TUMBLE" )"
  for run in eddy-p1 eddy-p2 flink-p2; do
    name="$query-$run"
    case $run in
      # Both engines checkpoint every 10 s (flink.py sets Flink's).
      eddy-*) printf "SET 'execution.checkpointing.interval' = '10 s';\n%s\n" "${sql//ENGINE/$name}" > "$WORK/$name.sql"
              measure "$name" "$EDDY" run --parallelism "${run#eddy-p}" "$WORK/$name.sql" ;;
      flink-*) printf '%s\n' "${sql//ENGINE/$name}" > "$WORK/$name.sql"
               measure "$name" "$VENV/bin/python" bench/kafka/flink.py "$CONNECTOR" 2 "$WORK/$name.sql" ;;
    esac
  done
done

# The tumble's windows, read back from each run's topic by Eddy: equal.
for run in eddy-p1 eddy-p2 flink-p2; do
  cat > "$WORK/read-$run.sql" <<SQL
CREATE TABLE w (window_start TIMESTAMP(3), auction BIGINT, bids BIGINT, top BIGINT) WITH (
  'connector' = 'kafka', 'topic' = 'windows-tumble-$run', 'properties.bootstrap.servers' = '$BOOT',
  'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset', 'format' = 'json');
SELECT window_start, auction, bids, top FROM w;
SQL
  "$EDDY" run --format json "$WORK/read-$run.sql" | sort > "$WORK/windows-$run.txt"
done
rows=$(wc -l < "$WORK/windows-eddy-p1.txt")
if cmp -s "$WORK/windows-eddy-p1.txt" "$WORK/windows-eddy-p2.txt" &&
   cmp -s "$WORK/windows-eddy-p1.txt" "$WORK/windows-flink-p2.txt"; then
  echo "tumble: the three runs wrote the same $rows windows" >&2
else
  echo "tumble: the runs' windows differ ($WORK kept)" >&2; trap - EXIT; kill "$BROKER"; exit 1
fi
