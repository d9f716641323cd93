"""The toy world."""
