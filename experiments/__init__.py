"""The experiment scripts, run from the repository root as modules: ``python -m experiments.<name>``
(``evidence``, ``evidence_summary``, ``skewed_mean_sweep``, ``dvml_samples``, ``flow_volume``)."""
