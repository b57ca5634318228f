"""The gateway daemon: ingest, validation, rules, outbox and uplink to the cloud."""
