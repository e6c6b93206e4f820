#!/usr/bin/env bash
# kafka-server-start.sh server.properties (the official default heap; KAFKA_LOG4J_ROOT_LOGLEVEL sets the log level)
level=${KAFKA_LOG4J_ROOT_LOGLEVEL:-info}
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xmx1G -Xms1G} KAFKA_RUN_LOG_LEVEL=${level,,} exec kafka-run-class.sh kafka.Kafka "$@"
