#![warn(missing_docs)]

//! Atari Pong for the STPN experiments (docs/reference.md §5.2) on the real Arcade Learning Environment 0.12.1,
//! compiled from the C++ source of the ale-py 0.12.1 package by `build.rs`.
//!
//! - [`ale`]: a safe wrapper around ALE's `ALEInterface`.
//! - [`pong`]: `PongNoFrameskip-v4` with the paper's observation (RLlib's pixel preprocessing,
//!   one frame per step) behind the workspace's Gymnasium-style [`stpn_envs::Env`].
//! - [`deepmind`]: the DeepMind preprocessing (no-op starts, frame skip 4 with max-pooling,
//!   episodic life, 84×84 grey, stack of 4), for comparisons with modern agents.
//! - [`resize`]: OpenCV's `INTER_LINEAR` and `INTER_AREA` resizes, bit-exact.
//! - [`seed`]: numpy's `SeedSequence`, to seed ALE exactly as ale-py does.
//!
//! Main entry points: [`Pong::new`] (the paper's environment, an [`stpn_envs::Env`] with
//! observations of 84 × 84 `f32` and 6 discrete actions) and [`DeepMindPong::new`] (stacks of
//! 4 × 84 × 84 `u8`).
//!
//! Setup: `scripts/setup-ale` downloads the ale-py 0.12.1 source from PyPI into the git-ignored
//! `third_party/` and copies the Pong ROM out of it (`STPN_ROM_DIR` points elsewhere).
//!
//! Licence: this crate is GPL-2.0-only because it links ALE (GPL-2.0-only); so is any binary
//! built with it. The ROM is third-party copyrighted data shipped by ale-py, covered by no licence
//! of this project, and never committed.

pub mod ale;
pub mod deepmind;
pub mod pong;
pub mod resize;
pub mod seed;

pub use ale::{Ale, AleError, rom_path};
pub use deepmind::{DeepMindConfig, DeepMindPong, ScaledDeepMindPong};
pub use pong::{Pong, PongConfig};
