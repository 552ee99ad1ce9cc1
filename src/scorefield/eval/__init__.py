"""Evaluation-only models: not part of the library's modelling API, used to measure it.

- ``classifier``: the 8x8 digits classifier whose features give a Fréchet distance, the digits'
  train/test split in the models' scaling, and bits/dim of dequantized digits against baselines
  (``bench/bench_digits.py``).
"""
