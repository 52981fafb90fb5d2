"""Input pipelines: TFDS record tables, per-record transforms, grain pipelines."""
