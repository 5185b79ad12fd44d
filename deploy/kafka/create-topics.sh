#!/bin/sh
# The topics of SPEC §2 with one partition count (the inputs must be co-partitioned); what
# `adl-stream topics --config deploy/config/adl-stream.toml --partitions 6` creates.
set -e
PARTITIONS="${PARTITIONS:-6}"
for topic in fills mark-prices balances insurance-fund liquidation-shortfalls adl-orders adl-decisions adl-dlq; do
  /opt/kafka/bin/kafka-topics.sh --bootstrap-server kafka:9092 --create --if-not-exists \
    --topic "$topic" --partitions "$PARTITIONS" --replication-factor 1
done
# The ADL indicators: one record per position, compacted.
/opt/kafka/bin/kafka-topics.sh --bootstrap-server kafka:9092 --create --if-not-exists \
  --topic adl-indicators --partitions "$PARTITIONS" --replication-factor 1 --config cleanup.policy=compact
# The state changelog of group "adl-stream" (the processor creates it too, where it may create topics).
/opt/kafka/bin/kafka-topics.sh --bootstrap-server kafka:9092 --create --if-not-exists \
  --topic adl-stream-changelog --partitions "$PARTITIONS" --replication-factor 1 --config cleanup.policy=compact
