"""Records InvertedPendulum trajectories from Gymnasium (the reference for the Rust replay test).

    python3 -m venv /tmp/gym && /tmp/gym/bin/pip install mujoco==3.17.0 "gymnasium[mujoco]==1.4.0" imageio packaging
    /tmp/gym/bin/python scripts/record/inverted_pendulum.py > crates/stpn-envs/tests/data/inverted_pendulum_gymnasium.json

(`gym.make` of the MuJoCo envs fails with ModuleNotFoundError without imageio and packaging.)

Each trajectory: a version, an exact initial state (set with `set_state`, so that the reset noise,
whose generator differs, plays no part), a fixed action sequence with out-of-range actions, and
per step the observation, reward, terminated and truncated flags, until the episode ends.
"""
import json
import math

import gymnasium as gym
import mujoco
import numpy as np


def record(version, qpos, qvel, actions):
    env = gym.make(f"InvertedPendulum-{version}")
    env.reset(seed=0)
    env.unwrapped.set_state(np.array(qpos), np.array(qvel))
    steps = []
    for action in actions:
        observation, reward, terminated, truncated, _ = env.step(np.array([action]))
        steps.append({
            "observation": [float(x) for x in observation],
            "reward": float(reward),
            "terminated": bool(terminated),
            "truncated": bool(truncated),
        })
        if terminated or truncated:
            break
    return {"version": version, "qpos": qpos, "qvel": qvel, "actions": actions[: len(steps)], "steps": steps}


def balanced(version, qpos, qvel, length, kick=0.0):
    # A PD controller keeps the pole up: a long trajectory; the actions it took are recorded.
    # With `kick`, every 23rd action gets ±kick added, pushing it past the ±3 control range.
    env = gym.make(f"InvertedPendulum-{version}")
    env.reset(seed=0)
    env.unwrapped.set_state(np.array(qpos), np.array(qvel))
    observation = np.concatenate([qpos, qvel])
    actions, steps = [], []
    for _ in range(length):
        action = float(10.0 * observation[1] + 2.0 * observation[3] + 0.3 * observation[0])
        if kick and len(actions) % 23 == 11:
            action += kick if len(actions) % 46 == 11 else -kick
        observation, reward, terminated, truncated, _ = env.step(np.array([action]))
        actions.append(action)
        steps.append({
            "observation": [float(x) for x in observation],
            "reward": float(reward),
            "terminated": bool(terminated),
            "truncated": bool(truncated),
        })
        if terminated or truncated:
            break
    return {"version": version, "qpos": qpos, "qvel": qvel, "actions": actions, "steps": steps}


def controller(length):
    # A swaying push with spikes beyond the ±3 control range.
    return [0.05 * math.sin(0.3 * t) + (4.5 if t % 17 == 5 else 0.0) for t in range(length)]


trajectories = [
    record("v4", [0.01, -0.005], [0.002, 0.003], [0.05 * math.sin(0.3 * t) for t in range(300)]),
    record("v5", [0.01, -0.005], [0.002, 0.003], [0.05 * math.sin(0.3 * t) for t in range(300)]),
    record("v4", [-0.2, 0.01], [0.0, -0.02], controller(300)),
    record("v5", [0.3, -0.01], [0.1, 0.0], [-5.0 if t % 2 else 2.0 for t in range(300)]),
    balanced("v4", [0.05, 0.02], [-0.01, 0.01], 1000),
    balanced("v5", [-0.03, 0.005], [0.02, -0.01], 300, kick=4.0),
]
print(json.dumps({"gymnasium": gym.__version__, "mujoco": mujoco.__version__, "trajectories": trajectories}))
