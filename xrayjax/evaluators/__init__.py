"""Evaluators: metrics, figures and reports computed from predictions and data."""
