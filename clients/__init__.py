"""Flower ClientApp for fedcompress: thin wiring around ``fedcompress.federation``."""
