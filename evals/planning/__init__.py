"""Planning with a trained world model (``eval_name: planning``): CEM + MPC episodes in the toy world against random
actions and a greedy oracle (:mod:`evals.planning.eval`)."""

from evals.planning.eval import main

__all__ = ["main"]
