"""The experiment scripts, run from the repository root as modules: ``python -m experiments.<name>``
(``evidence_summary``, ``results_summary``, ``dvml_samples``, ``flow_volume``). The studies
themselves are ``pml-bench study`` files (``pml_regularizers/bench/studies/``)."""
