"""Datasets: where raw files come from, how they are parsed and validated, how they are split."""
