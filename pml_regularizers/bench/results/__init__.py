"""What benchmark runs leave and what is made of it: the experiment folder's layout and files
(results, checkpoints, logs), reports, their statistics, tables and plots. Reading results never
builds a model."""
