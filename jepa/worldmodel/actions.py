"""Actions from consecutive robot states, as the official V-JEPA 2-AC DROID loader computes them.

A state is 7 numbers: Cartesian position ``(x, y, z)``, orientation as extrinsic ``xyz`` Euler angles (radians) and
the gripper's closedness. The action that moves state ``t`` to state ``t + 1`` is

* the position delta ``p_{t+1} - p_t``,
* the rotation delta: the Euler angles (``xyz``) of ``R_{t+1} R_t^T``, the rotation that turns ``R_t`` into
  ``R_{t+1}`` in the world frame,
* the gripper delta ``g_{t+1} - g_t``.
"""

import numpy as np
from scipy.spatial.transform import Rotation  # type: ignore[import-untyped]

STATE_DIM = 7  # position (3), Euler angles (3), gripper (1)


def _check_states(states: np.ndarray) -> np.ndarray:
    states = np.asarray(states, dtype=np.float64)
    if states.ndim != 2 or states.shape[1] != STATE_DIM:
        raise ValueError(f"states: got shape {states.shape}, expected [T, {STATE_DIM}] (xyz, Euler xyz, gripper)")
    return states


def states_to_actions(states: np.ndarray) -> np.ndarray:
    """``[T, 7]`` states -> ``[T - 1, 7]`` actions (see the module docstring), float64."""
    states = _check_states(states)
    rot = Rotation.from_euler("xyz", states[:, 3:6])
    delta = rot[1:] * rot[:-1].inv()  # R_{t+1} R_t^T (composition applies the right operand first)
    return np.concatenate(
        [states[1:, :3] - states[:-1, :3], delta.as_euler("xyz"), states[1:, 6:] - states[:-1, 6:]], axis=1
    )


def apply_action(state: np.ndarray, action: np.ndarray) -> np.ndarray:
    """The state reached from ``state`` ``[..., 7]`` by ``action`` ``[..., 7]``: the inverse of
    :func:`states_to_actions` (position and gripper added, rotation ``R_delta R``), the gripper clipped to
    ``[0, 1]``, as the official planning code does."""
    state, action = np.asarray(state, dtype=np.float64), np.asarray(action, dtype=np.float64)
    rot = Rotation.from_euler("xyz", action[..., 3:6].reshape(-1, 3)) * Rotation.from_euler(
        "xyz", state[..., 3:6].reshape(-1, 3)
    )
    angles = rot.as_euler("xyz").reshape(state[..., 3:6].shape)
    gripper = np.clip(state[..., 6:] + action[..., 6:], 0.0, 1.0)
    return np.concatenate([state[..., :3] + action[..., :3], angles, gripper], axis=-1)
