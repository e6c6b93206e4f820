"""The bench job on other Python stream processors (Quix Streams, faust-streaming), side by side with ours.

`make bench-peers` (`python -m bench.peers`) runs it. Each peer runs the project's own account pipeline
(`processors.pipeline.AccountPipeline`: decode, dedupe, pending/final join, account table, Avro updates and
snapshots) inside the peer's runtime: the peer's consumer, its state store (with its changelog) in place of
our RocksDB stores, its producer and its exactly-once transactions. So the job and its outputs are the same
by construction, and what differs is the runtime. The peers need their own virtualenv (`.venv-peers`, extra
`[peers]`): Quix Streams pins confluent-kafka and pydantic below this project's versions.
"""
