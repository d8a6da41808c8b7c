#![warn(missing_docs)]

//! Environments and data of the STPN experiments, behind a small API that follows Gymnasium's
//! conventions ([`env`](mod@env)).
//!
//! - [`art`]: the associative retrieval task (docs/reference.md §3.1).
//! - [`maze`]: Miconi's grid maze (docs/reference.md §4.1).
//! - [`familiarity`]: the continual familiarity stream of HebbFF (docs/reference.md §6.1).
//! - `pendulum` (feature `mujoco`): InvertedPendulum on MuJoCo 3.17 (docs/reference.md §5.3).
//!
//! Main entry points: the [`Env`] trait (`reset(seed)`, `step(action)` with Gymnasium's
//! `terminated` / `truncated`), its wrappers [`TimeLimit`] and [`RecordEpisodeStatistics`],
//! [`SyncVectorEnv`] for several copies with same-step auto-reset, the environment
//! [`maze::Maze`], and the datasets [`art::ArtDataset`] and [`familiarity::FamiliarityStream`].

pub mod art;
pub mod env;
pub mod familiarity;
pub mod maze;
#[cfg(feature = "mujoco")]
pub mod pendulum;

pub use env::{
    Env, EpisodeStats, Info, RecordEpisodeStatistics, Space, Step, SyncVectorEnv, TimeLimit,
};
