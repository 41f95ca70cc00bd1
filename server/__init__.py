"""Flower ServerApp for fedcompress: thin wiring around ``fedcompress.federation``."""
