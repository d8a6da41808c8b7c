#!/usr/bin/env python3
"""Records what ale-py 0.12.1 (the wheel on PyPI) and OpenCV do, for crates/stpn-atari's tests.

Writes crates/stpn-atari/tests/data/pong_ale_py.json. Run it with a virtual environment that has
the packages below (the first run makes it):

    python3 -m venv /tmp/stpn-ale-venv
    /tmp/stpn-ale-venv/bin/pip install "ale-py==0.12.1" numpy "opencv-python-headless<5" "gymnasium==1.4.0"
    /tmp/stpn-ale-venv/bin/python scripts/record/pong.py

Recorded:
- `raw`: the raw ALEInterface as PongNoFrameskip-v4 sets it up and seeds it (`AtariEnv.reset(seed)`:
  SeedSequence → `random_seed`, `loadROM`, `reset_game`), driven by a fixed pseudo-random action
  sequence over the minimal action set; the frames with a non-zero reward, the episode returns
  and lengths, the MD5 of the grey and RGB screens every few frames, and RLlib's preprocessing
  (crop, `cv2.resize` INTER_LINEAR, mean, scale) of a few screens.
- `truncation`: the frame at which `max_num_frames_per_episode` truncates.
- `sticky`: the same with sticky actions (0.25) and two seeds, which checks the seed derivation.
- `deepmind`: Gymnasium's AtariPreprocessing + FrameStackObservation(4) on PongNoFrameskip-v4.
- `resize`: `cv2.resize` of synthetic images (INTER_LINEAR and INTER_AREA).
- `seed_sequence`: `SeedSequence(seed).generate_state(2)` for a few seeds.
"""

import hashlib
import json
import os
import sys

import ale_py
import cv2
import gymnasium
import numpy as np
from ale_py import roms

OUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "..", "..", "crates", "stpn-atari", "tests", "data", "pong_ale_py.json",
)
MINIMAL = [0, 1, 3, 4, 11, 12]


class Actions:
    """The action sequence the Rust tests replay: an LCG (glibc's constants), index = (x >> 16) % 6."""

    def __init__(self, seed):
        self.state = seed

    def next(self):
        self.state = (self.state * 1103515245 + 12345) % (1 << 31)
        return (self.state >> 16) % 6


def md5(array):
    return hashlib.md5(np.ascontiguousarray(array).tobytes()).hexdigest()


def ale_seed(seed):
    """What ale-py's AtariEnv.seed_game gives ALE."""
    return int(np.int32(np.random.SeedSequence(seed).generate_state(2)[1]))


def make_ale(seed, repeat_action_probability=0.0, max_frames=108_000):
    ale = ale_py.ALEInterface()
    ale.setLoggerMode(ale_py.LoggerMode.Error)
    ale.setFloat("repeat_action_probability", repeat_action_probability)
    ale.setInt("max_num_frames_per_episode", max_frames)
    ale.setBool("sound_obs", False)
    ale.setInt("random_seed", ale_seed(seed))
    ale.loadROM(roms.get_rom_path("pong"))
    assert [action.value for action in ale.getMinimalActionSet()] == MINIMAL
    ale.reset_game()
    return ale


def rllib_transform(rgb):
    """RLlib's GenericPixelPreprocessor with dim 84, grayscale, zero_mean."""
    scaled = rgb[25:-25, :, :]
    resized = cv2.resize(scaled, (84, 84))
    grey = resized.mean(2).astype(np.float32)
    return resized, (grey - 128) / 128


def run_raw(frames, every, observe_at, seed, action_seed):
    ale = make_ale(seed)
    actions = Actions(action_seed)
    rewards, returns, lengths, grey_md5, rgb_md5, observations = [], [], [], {}, {}, {}
    episode_return, episode_length = 0, 0

    def record(frame):
        if frame % every == 0:
            grey_md5[str(frame)] = md5(ale.getScreenGrayscale())
            rgb_md5[str(frame)] = md5(ale.getScreenRGB())
        if frame in observe_at:
            resized, observation = rllib_transform(ale.getScreenRGB())
            observations[str(frame)] = {
                "resized_rgb_md5": md5(resized),
                "observation_md5": md5(observation.astype("<f4")),
                "observation_first": [float(x) for x in observation.reshape(-1)[:8]],
                "observation_sum": float(observation.astype(np.float64).sum()),
            }

    record(0)
    for frame in range(1, frames + 1):
        reward = ale.act(ale_py.Action(MINIMAL[actions.next()]))
        episode_return += reward
        episode_length += 1
        if reward != 0:
            rewards.append([frame, int(reward)])
        record(frame)
        if ale.game_over(with_truncation=False):
            returns.append(episode_return)
            lengths.append(episode_length)
            episode_return, episode_length = 0, 0
            ale.reset_game()
            grey_md5[f"{frame}_reset"] = md5(ale.getScreenGrayscale())
    return {
        "seed": seed,
        "action_seed": action_seed,
        "frames": frames,
        "screen_md5_every": every,
        "rewards": rewards,
        "episode_returns": returns,
        "episode_lengths": lengths,
        "partial_return": episode_return,
        "grey_md5": grey_md5,
        "rgb_md5": rgb_md5,
        "observations": observations,
        "final_frame_number": ale.getFrameNumber(),
        "final_episode_frame_number": ale.getEpisodeFrameNumber(),
    }


def check_raw_is_atari_env(seed, frames, action_seed):
    """`make_ale` drives ALE exactly as gymnasium.make("PongNoFrameskip-v4").reset(seed=seed) does."""
    env = gymnasium.make("PongNoFrameskip-v4", obs_type="grayscale")
    observation, _ = env.reset(seed=seed)
    ale = make_ale(seed)
    actions = Actions(action_seed)
    for _ in range(frames):
        assert md5(observation) == md5(ale.getScreenGrayscale())
        action = actions.next()
        observation, reward, terminated, truncated, _ = env.step(action)
        assert reward == ale.act(ale_py.Action(MINIMAL[action]))
        assert (terminated, truncated) == (ale.game_over(with_truncation=False), ale.game_truncated())


def run_truncation(max_frames):
    ale = make_ale(0, max_frames=max_frames)
    actions = Actions(7)
    first = None
    for frame in range(1, max_frames + 10):
        ale.act(ale_py.Action(MINIMAL[actions.next()]))
        if first is None and ale.game_truncated():
            first = frame
            terminal, over = ale.game_over(with_truncation=False), ale.game_over()
    after = ale.getEpisodeFrameNumber()
    return {"max_frames": max_frames, "first_truncated_frame": first,
            "terminated_then": terminal, "game_over_then": over,
            "episode_frame_number_after": after}


def run_sticky(seed, frames, every, action_seed):
    ale = make_ale(seed, repeat_action_probability=0.25)
    actions = Actions(action_seed)
    rewards, grey_md5 = [], {}
    for frame in range(1, frames + 1):
        reward = ale.act(ale_py.Action(MINIMAL[actions.next()]))
        if reward != 0:
            rewards.append([frame, int(reward)])
        if frame % every == 0:
            grey_md5[str(frame)] = md5(ale.getScreenGrayscale())
    return {"seed": seed, "ale_seed": ale_seed(seed), "action_seed": action_seed,
            "frames": frames, "rewards": rewards, "grey_md5": grey_md5}


def run_deepmind(seed, steps, every, action_seed):
    env = gymnasium.make("PongNoFrameskip-v4")
    env = gymnasium.wrappers.AtariPreprocessing(
        env, noop_max=30, frame_skip=4, screen_size=84, terminal_on_life_loss=True)
    env = gymnasium.wrappers.FrameStackObservation(env, 4)
    ale = env.unwrapped.ale
    actions = Actions(action_seed)
    observation, _ = env.reset(seed=seed)
    # Each no-op is one frame, so the episode frame number after reset is the no-op count.
    noops = [ale.getEpisodeFrameNumber()]
    observation_md5 = {"0": md5(observation)}
    rewards, ends = [], []
    for step in range(1, steps + 1):
        observation, reward, terminated, truncated, _ = env.step(actions.next())
        if reward != 0:
            rewards.append([step, float(reward)])
        if step % every == 0 or terminated or truncated:
            observation_md5[str(step)] = md5(observation)
        if terminated or truncated:
            ends.append([step, bool(terminated), bool(truncated)])
            observation, _ = env.reset()
            noops.append(ale.getEpisodeFrameNumber())
            observation_md5[f"{step}_reset"] = md5(observation)
    return {"seed": seed, "action_seed": action_seed, "steps": steps, "noops": noops,
            "rewards": rewards, "ends": ends, "observation_md5": observation_md5,
            "shape": list(observation.shape)}


def synthetic(height, width, channels, salt):
    """The synthetic image the Rust tests make: byte i = ((i·2654435761 + salt) mod 2³²) >> 13 & 255."""
    index = np.arange(height * width * channels, dtype=np.uint64)
    values = ((index * np.uint64(2654435761) + np.uint64(salt)) % np.uint64(1 << 32)) >> np.uint64(13)
    image = (values & np.uint64(255)).astype(np.uint8)
    return image.reshape((height, width, channels) if channels > 1 else (height, width))


def run_resize():
    cases = []
    for (height, width, channels, out_h, out_w, method) in [
        (160, 160, 3, 84, 84, "linear"),
        (50, 30, 3, 13, 21, "linear"),
        (7, 5, 1, 16, 11, "linear"),
        (9, 13, 1, 9, 4, "linear"),
        (210, 160, 1, 84, 84, "area"),
        (100, 70, 1, 30, 40, "area"),
    ]:
        image = synthetic(height, width, channels, salt=len(cases) + 1)
        interpolation = cv2.INTER_LINEAR if method == "linear" else cv2.INTER_AREA
        out = cv2.resize(image, (out_w, out_h), interpolation=interpolation)
        case = {"height": height, "width": width, "channels": channels, "out_height": out_h,
                "out_width": out_w, "method": method, "salt": len(cases) + 1, "md5": md5(out)}
        if out.size <= 300:
            case["values"] = [int(x) for x in out.reshape(-1)]
        cases.append(case)
    return cases


def main():
    assert ale_py.__version__ == "0.12.1", ale_py.__version__
    rom = roms.get_rom_path("pong")
    with open(rom, "rb") as handle:
        rom_md5 = hashlib.md5(handle.read()).hexdigest()
    assert rom_md5 == "60e0ea3cbe0913d39803477945e9e5ec", rom_md5
    check_raw_is_atari_env(seed=123, frames=2000, action_seed=2024)
    record = {
        "versions": {"ale_py": ale_py.__version__, "numpy": np.__version__,
                     "opencv": cv2.__version__, "gymnasium": gymnasium.__version__},
        "rom_md5": rom_md5,
        "seed_sequence": {str(s): [int(x) for x in np.random.SeedSequence(s).generate_state(2)]
                          for s in [0, 1, 42, 123, 2**31, 2**40 + 7]},
        "raw": run_raw(frames=5000, every=250, observe_at={0, 1, 1200, 3333, 5000},
                       seed=123, action_seed=2024),
        "truncation": run_truncation(300),
        "sticky": [run_sticky(seed, 2000, 250, action_seed=99) for seed in (0, 5)],
        "deepmind": run_deepmind(seed=3, steps=1100, every=50, action_seed=11),
        "resize": run_resize(),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as handle:
        json.dump(record, handle, indent=1)
        handle.write("\n")
    raw = record["raw"]
    print(f"pong.py: wrote {os.path.relpath(OUT)}: returns {raw['episode_returns']} "
          f"(+ partial {raw['partial_return']}), deepmind ends {record['deepmind']['ends']}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
