"""Rules and alerts at the edge: rule types by registry, the engine, the open-alert book."""
