//! The DeepMind preprocessing, for comparisons with modern Atari agents (the paper did not use
//! it; see [`crate::pong`]). It is Gymnasium 1.4's
//! `FrameStackObservation(AtariPreprocessing(PongNoFrameskip-v4, noop_max=30, frame_skip=4,
//! screen_size=84, terminal_on_life_loss=True), 4)`, step for step:
//!
//! - reset: the emulator is reset, then `n` no-op frames with `n` uniform in `1..=noop_max`
//!   (if one of them ends the game, the emulator is reset again, with the same seed);
//! - step: the action is repeated for 4 frames (rewards summed, not clipped), stopping early at
//!   the end of the episode; the observation is the pixelwise maximum of the grey screens of the
//!   last two frames (ALE's luminance palette), resized to 84×84 by OpenCV's `INTER_AREA`
//!   (bit-exact, [`crate::resize`]), as `u8`. When the episode ends before the third frame, the
//!   buffers keep older screens, as in Gymnasium;
//! - a lost life ends the episode (`terminated`); Pong has no lives, so this never happens there;
//! - the last 4 observations are stacked, oldest first (4 × 84 × 84 `u8`); at reset the first
//!   observation fills the stack.
//!
//! Difference from Gymnasium: the number of no-ops is drawn from this env's own generator
//! (ChaCha8, [`stpn_envs::env::EnvRng`]), not from numpy's PCG64 seeded through `SeedSequence`,
//! so for a given seed it differs; [`DeepMindPong::reset_with_noops`] takes a count instead.
//! ALE itself is seeded exactly as ale-py seeds it.

use std::collections::VecDeque;

use rand::Rng;
use stpn_envs::env::EnvRng;
use stpn_envs::{Env, Info, Space, Step};

use crate::ale::AleError;
use crate::pong::{OBSERVATION_SIDE, OBSERVATION_SIZE, Pong, PongConfig, SCREEN};
use crate::resize::{AreaResize, Image};

/// The settings of the DeepMind preprocessing.
#[derive(Clone, Debug, PartialEq)]
pub struct DeepMindConfig {
    /// No-op frames at reset are drawn from `1..=noop_max` (0: none).
    pub noop_max: usize,
    /// Frames per agent step.
    pub frame_skip: usize,
    /// Whether losing a life ends the episode.
    pub terminal_on_life_loss: bool,
    /// Observations stacked.
    pub stack: usize,
}

impl Default for DeepMindConfig {
    fn default() -> Self {
        Self {
            noop_max: 30,
            frame_skip: 4,
            terminal_on_life_loss: true,
            stack: 4,
        }
    }
}

/// Pong with the DeepMind preprocessing; see the module documentation.
pub struct DeepMindPong {
    pong: Pong,
    config: DeepMindConfig,
    rng: EnvRng,
    resize: AreaResize,
    /// Gymnasium's `obs_buffer`: `[0]` the last frame's grey screen (max-pooled in place when
    /// observed), `[1]` the one before.
    screens: [Vec<u8>; 2],
    stack: VecDeque<Vec<u8>>,
    lives: i32,
}

impl DeepMindPong {
    /// On `PongNoFrameskip-v4`.
    pub fn new(config: DeepMindConfig) -> Result<Self, AleError> {
        Self::with_pong(Pong::new()?, config)
    }

    /// On a given Pong (e.g. one made with [`Pong::with_config`]).
    pub fn with_pong(pong: Pong, config: DeepMindConfig) -> Result<Self, AleError> {
        assert!(config.frame_skip > 0, "frame_skip must be positive");
        assert!(config.stack > 0, "the stack holds at least one observation");
        Ok(Self {
            pong,
            resize: AreaResize::new(SCREEN, (OBSERVATION_SIDE, OBSERVATION_SIDE)),
            screens: [vec![0; SCREEN.0 * SCREEN.1], vec![0; SCREEN.0 * SCREEN.1]],
            stack: VecDeque::with_capacity(config.stack),
            config,
            rng: EnvRng::default(),
            lives: 0,
        })
    }

    /// The underlying Pong (its emulator and RLlib-style observation, unused here).
    pub fn pong(&self) -> &Pong {
        &self.pong
    }

    /// The preprocessing's settings.
    pub fn config(&self) -> &DeepMindConfig {
        &self.config
    }

    /// Copies ALE's grey screen into buffer `index`.
    fn grab(&mut self, index: usize) {
        self.pong.ale().screen_grayscale(&mut self.screens[index]);
    }

    /// Gymnasium's `_get_obs`: max-pool into buffer 0 (with frame skip), then resize.
    fn observe(&mut self) -> Vec<u8> {
        if self.config.frame_skip > 1 {
            let [last, before] = &mut self.screens;
            for (value, &other) in last.iter_mut().zip(before.iter()) {
                *value = (*value).max(other);
            }
        }
        let mut out = vec![0u8; OBSERVATION_SIZE];
        let image = Image::new(&self.screens[0], SCREEN.0, SCREEN.1, 1);
        self.resize.apply(image, &mut out);
        out
    }

    fn stacked(&self) -> Vec<u8> {
        self.stack.iter().flatten().copied().collect()
    }

    /// A reset with exactly `noops` no-op frames (`reset` draws the count).
    pub fn reset_with_noops(&mut self, seed: Option<u64>, noops: usize) -> Vec<u8> {
        self.pong.reset_emulator(seed);
        for _ in 0..noops {
            let frame = self.pong.act(0);
            if frame.terminated || frame.truncated {
                self.pong.reset_emulator(seed);
            }
        }
        self.lives = self.pong.ale_mut().lives();
        self.grab(0);
        self.screens[1].fill(0);
        let observation = self.observe();
        self.stack.clear();
        for _ in 0..self.config.stack {
            self.stack.push_back(observation.clone());
        }
        self.stacked()
    }
}

impl Env for DeepMindPong {
    type Observation = Vec<u8>;
    type Action = usize;

    fn reset(&mut self, seed: Option<u64>) -> (Vec<u8>, Info<Vec<u8>>) {
        self.rng.reseed(seed);
        let noops = if self.config.noop_max > 0 {
            self.rng.0.random_range(1..=self.config.noop_max)
        } else {
            0
        };
        (self.reset_with_noops(seed, noops), Info::empty())
    }

    fn step(&mut self, action: &usize) -> Step<Vec<u8>> {
        let skip = self.config.frame_skip;
        let mut reward = 0;
        let (mut terminated, mut truncated) = (false, false);
        for t in 0..skip {
            let frame = self.pong.act(*action);
            reward += frame.reward;
            terminated = frame.terminated;
            truncated = frame.truncated;
            if self.config.terminal_on_life_loss {
                let lives = self.pong.ale_mut().lives();
                terminated |= lives < self.lives;
                self.lives = lives;
            }
            if terminated || truncated {
                break;
            }
            if t + 2 == skip {
                self.grab(1);
            } else if t + 1 == skip {
                self.grab(0);
            }
        }
        let observation = self.observe();
        self.stack.pop_front();
        self.stack.push_back(observation);
        Step {
            observation: self.stacked(),
            reward: reward as f64,
            terminated,
            truncated,
            info: Info::empty(),
        }
    }

    fn observation_space(&self) -> Space {
        Space::uniform_box(
            0.0,
            255.0,
            vec![self.config.stack, OBSERVATION_SIDE, OBSERVATION_SIDE],
        )
    }

    fn action_space(&self) -> Space {
        self.pong.action_space()
    }
}

/// [`DeepMindPong`] as an agent reads it: the stacked frames as `f32` in `[0, 1]` (`x / 255`),
/// and the reward clipped to its sign (DeepMind's reward clipping; a Pong step of 4 frames scores
/// at most one point, so returns are unchanged).
pub struct ScaledDeepMindPong(pub DeepMindPong);

fn scaled(frames: Vec<u8>) -> Vec<f32> {
    frames.into_iter().map(|x| f32::from(x) / 255.0).collect()
}

fn scaled_info(info: Info<Vec<u8>>) -> Info<Vec<f32>> {
    Info {
        episode: info.episode,
        final_observation: info.final_observation.map(scaled),
    }
}

impl Env for ScaledDeepMindPong {
    type Observation = Vec<f32>;
    type Action = usize;

    fn reset(&mut self, seed: Option<u64>) -> (Vec<f32>, Info<Vec<f32>>) {
        let (observation, info) = self.0.reset(seed);
        (scaled(observation), scaled_info(info))
    }

    fn step(&mut self, action: &usize) -> Step<Vec<f32>> {
        let step = self.0.step(action);
        Step {
            observation: scaled(step.observation),
            reward: step.reward.signum() * f64::from(step.reward != 0.0),
            terminated: step.terminated,
            truncated: step.truncated,
            info: scaled_info(step.info),
        }
    }

    fn observation_space(&self) -> Space {
        let shape = vec![self.0.config.stack, OBSERVATION_SIDE, OBSERVATION_SIDE];
        Space::uniform_box(0.0, 1.0, shape)
    }

    fn action_space(&self) -> Space {
        self.0.action_space()
    }
}

/// [`DeepMindPong`] on a Pong with the given emulator settings.
pub fn deepmind_pong(pong: PongConfig, config: DeepMindConfig) -> Result<DeepMindPong, AleError> {
    DeepMindPong::with_pong(Pong::with_config(pong)?, config)
}
