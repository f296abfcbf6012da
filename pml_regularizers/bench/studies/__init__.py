"""The published studies, one YAML file each (:mod:`pml_regularizers.bench.search.study` describes
the format; ``pml-bench study --list`` lists them)."""
