"""Small helpers shared across the package: content keys, atomic publication, device choice."""
