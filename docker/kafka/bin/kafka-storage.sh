#!/usr/bin/env bash
exec kafka-run-class.sh kafka.tools.StorageTool "$@"
