"""What the two trainers (pretraining in ``app.pretrain``, probes in ``evals.probing``) share, below them both.

- :mod:`jepa.training.run`: a run's folder: checkpoint paths, atomic saves, strict loads, which checkpoint a run
  resumes from, and the CSV log a resumed run continues.
- :mod:`jepa.training.rng`: the random generators as checkpoint data (exact resume), and seeding them.
- :mod:`jepa.training.ddp`: the DDP wrapping both trainers use.
- :mod:`jepa.training.builders`: a pretraining config's models, data set and mask collator, loss and schedules.

Parameter groups and per-step hyper-parameters are in :mod:`jepa.training.optim`, the schedules in
:mod:`jepa.training.schedules`; the JEPA module and its losses in :mod:`jepa.training.meta_arch` and
:mod:`jepa.training.losses`.
Nothing is imported here, so that ``import jepa.training.rng`` stays light.
"""
