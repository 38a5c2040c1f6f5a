"""The benchmark suite: ``python -m bench`` (``make bench``). See bench/README.md."""
