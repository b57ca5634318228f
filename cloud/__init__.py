"""The cloud aggregator: ingest, stores, alert lifecycle, HTTP API, WebSocket and dashboard."""
