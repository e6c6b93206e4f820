"""Durable local spool: where verified events wait while Kafka does not acknowledge them.

`<spool_dir>/worker-<n>/` per worker process, each holding `LOCK`, `cursor` and segment files. The modules, from
the bytes on disk up:

- `frames`: the on-disk record format (length, crc32, payload) and the scans that find torn or damaged frames;
- `cursor`: the cursor file, the position up to which a directory's records are published;
- `directories`: the per-worker directories and their locks;
- `segments`: `Spool`, the segment files of one directory (append, recovery, quarantine, read, commit);
- `writer`: `SpoolWriter`, the async front of a `Spool` (group commit on one disk thread);
- `worker_spools`: `WorkerSpools`, the spools one worker drains (its own and those adopted from dead workers);
- `drain`: `Drainer`, the loop that publishes the spools back to Kafka, in order.

Each payload is one record in `gateway.kafka_record`'s byte form.
"""
