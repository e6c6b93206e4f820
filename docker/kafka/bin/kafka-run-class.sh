#!/usr/bin/env bash
# kafka-run-class.sh CLASS [ARGS...]: a JVM on /opt/kafka/libs with the variables of Kafka's own scripts
# (KAFKA_HEAP_OPTS, KAFKA_JVM_PERFORMANCE_OPTS, KAFKA_OPTS); logs go through slf4j-simple to stderr.
set -euo pipefail
main=$1
shift
# shellcheck disable=SC2086  # the *_OPTS variables are word lists, as in Kafka's scripts
exec java ${KAFKA_HEAP_OPTS:--Xmx256m} ${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseG1GC -Djava.awt.headless=true} ${KAFKA_OPTS:-} \
  -Dorg.slf4j.simpleLogger.defaultLogLevel="${KAFKA_RUN_LOG_LEVEL:-warn}" -Dorg.slf4j.simpleLogger.showDateTime=true \
  -cp '/opt/kafka/libs/*' "$main" "$@"
