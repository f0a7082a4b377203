"""How a run is executed: process groups and rank helpers (:mod:`jepa.runtime.distributed`), Slurm launches,
stop signals and the shared command line (:mod:`jepa.runtime.launch`), logging set-up and the CSV log
(:mod:`jepa.runtime.logging_utils`). Nothing is imported here."""
