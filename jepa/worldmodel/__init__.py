"""World models on frozen JEPA encoders (V-JEPA 2-AC): trajectory data, a built-in toy world, the training
objective and what planning needs.

* :mod:`jepa.worldmodel.actions`: actions from consecutive robot states, as the official DROID loader derives them.
* :mod:`jepa.worldmodel.data`: the DROID trajectory layout (a CSV of trajectory folders, each with a metadata JSON,
  ``trajectory.h5`` and MP4 recordings), read into clips, actions, states and extrinsics.
* :mod:`jepa.worldmodel.toyworld`: a rendered 2-D scene moved by continuous 2-D actions, and a generator that writes
  its trajectories in the DROID layout, so both go through the one loader.
* :mod:`jepa.worldmodel.model`: frozen encoder + action-conditioned predictor + teacher-forcing and rollout losses,
  and the warmup-stable-decay LR.
* :mod:`jepa.worldmodel.load`: AC predictor files, trained world models, and the released ``vjepa2_ac_vit_giant``.

Planning with a world model is :mod:`jepa.planning` (CEM, MPC) and ``eval_name: planning`` (:mod:`evals.planning`).

Importing this package imports nothing heavy; the submodules are imported where used.
"""
