"""The benchmark protocol: an experiment's seeds and folds trained, selected on validation and
tested (:mod:`~pml_regularizers.bench.protocol.runner`), one fold's training, checkpoints and
seeding, the checks made before anything is written, torchrun, and embedding with trained models."""
