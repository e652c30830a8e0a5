"""What the Snakemake workflow calls: slide discovery at parse time, and one function per rule.

The workflow's ``scripts/`` are thin entry points into :mod:`slidetiles.pipeline.steps`; all logic lives here so
it is tested like the rest of the library.
"""
