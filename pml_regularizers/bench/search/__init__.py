"""Hyperparameter searches on validation (:mod:`.search`), their spaces (:mod:`.space`) and
budgets (:mod:`.budget`), their reports (:mod:`.report`), and studies: searches of several
configs written as data (:mod:`.study`)."""
