"""Offline conversion of raw sources and rendered phantoms into TFDS datasets."""
