"""Small helpers shared by every layer (no imports from data/models/engine/methods)."""
