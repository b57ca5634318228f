"""Notifier plugins, one module per channel; `cloud.notify.registry.discover` loads them."""
