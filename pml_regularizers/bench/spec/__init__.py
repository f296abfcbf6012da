"""The benchmark config: composed by Hydra from the YAML groups in ``conf/`` and command-line
overrides, and checked once, at the command-line edge."""
