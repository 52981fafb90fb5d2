"""xrayjax: synthetic-data bone X-ray deep learning in JAX."""
