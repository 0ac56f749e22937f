"""Op implementations (being written)."""
