"""Protocol adapters: each turns one device protocol into Readings and Events."""
