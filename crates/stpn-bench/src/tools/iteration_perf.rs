//! Whole training iterations as `perf` cases: the rollout and the update exactly as training runs
//! them (each experiment's own loop, on its paper config), timed by the loop itself
//! (`metrics.csv`'s `seconds`, which excludes checkpoints), reported in milliseconds per iteration
//! and environment steps per second. The first iteration (allocations, thread start-up) is not
//! counted.

use std::path::Path;

use anyhow::{Context, Result, bail};
use stpn_model::Backend;

use crate::experiments::maze::{MazeConfig, MazeCore, MazeExperiment};
use crate::experiments::pendulum::{Pendulum, PendulumConfig, PendulumCore};
use crate::experiments::pong::{PongConfig, PongCore, PongExperiment};
use crate::experiments::{Experiment, Session};
use crate::run_dir::RunDir;

/// One iteration case.
#[derive(Clone, Copy, Debug)]
pub struct IterationCase {
    pub name: &'static str,
    pub what: &'static str,
    /// Timed iterations when `--repeats` is not given.
    pub repeats: usize,
}

pub const ITERATION_CASES: [IterationCase; 10] = [
    IterationCase {
        name: "pong_a2c_stpn",
        what: "Pong A2C iteration, STPN h64: 16 envs x 50 frames (paper setting, frame skip 1)",
        repeats: 3,
    },
    IterationCase {
        name: "pong_a2c_lstm",
        what: "Pong A2C iteration, LSTM h48: 16 envs x 50 frames",
        repeats: 3,
    },
    IterationCase {
        name: "pong_dm_a2c_stpn",
        what: "Pong A2C iteration, STPN h64, DeepMind setting: 16 envs x 5 agent steps of 4 frames",
        // ~20× shorter than the paper setting's iterations.
        repeats: 30,
    },
    IterationCase {
        name: "pong_dm_a2c_lstm",
        what: "Pong A2C iteration, LSTM h48, DeepMind setting: 16 envs x 5 agent steps of 4 frames",
        repeats: 30,
    },
    IterationCase {
        name: "pong_dm_ppo_stpn",
        what: "Pong PPO iteration, STPN h64, DeepMind setting: 8 envs x 128 agent steps, 4 epochs",
        repeats: 3,
    },
    IterationCase {
        name: "pong_dm_ppo_lstm",
        what: "Pong PPO iteration, LSTM h48, DeepMind setting: 8 envs x 128 agent steps, 4 epochs",
        repeats: 3,
    },
    IterationCase {
        name: "maze_b64",
        what: "maze A2C iteration, STPN h55, 64 episodes of 200 steps (CPU-scaled setting)",
        repeats: 3,
    },
    IterationCase {
        name: "maze_b512",
        what: "maze A2C iteration, STPN h55, 512 episodes of 200 steps (paper setting)",
        repeats: 3,
    },
    IterationCase {
        name: "pendulum_ppo_stpnf",
        what: "InvertedPendulum PPO iteration, STPNf h64: 2 048 steps, 10 epochs of minibatches",
        repeats: 3,
    },
    IterationCase {
        name: "pendulum_ppo_lstm",
        what: "InvertedPendulum PPO iteration, LSTM h64",
        repeats: 3,
    },
];

/// What one measurement found: median and fastest milliseconds per iteration, environment
/// steps per iteration.
pub struct IterationTimes {
    pub ms_median: f64,
    pub ms_min: f64,
    pub env_steps_per_iteration: usize,
}

/// Runs `repeats` + 1 iterations of `case` on `backend` in a temporary run folder (removed
/// afterwards) and returns the times of all but the first.
pub fn measure(case: &str, backend: Backend, repeats: usize) -> Result<IterationTimes> {
    let iterations = repeats + 1;
    let folder = std::env::temp_dir().join(format!("stpn-perf-{case}-{}", std::process::id()));
    let session = Session::new(RunDir::create(&folder)?, backend, false, true);
    let trained = train(case, iterations, &session);
    let times = trained.and_then(|env_steps| read_times(&folder, env_steps));
    std::fs::remove_dir_all(&folder).ok();
    times
}

/// Trains `iterations` iterations of `case`; returns the environment steps per iteration.
fn train(case: &str, iterations: usize, session: &Session) -> Result<usize> {
    let pong = |mut config: PongConfig| {
        // The paper's 64 workers scaled to 16 environments; the PPO setting keeps its 8.
        config.envs = config.envs.min(16);
        let per_iteration = config.envs * config.a2c.fragment_length;
        config.total_steps = (per_iteration * iterations) as u64;
        config.checkpoint_every = iterations;
        PongExperiment::available()?;
        PongExperiment::train(&config, session)?;
        Ok(per_iteration)
    };
    let maze = |batch_size| {
        let mut config = MazeConfig::paper(MazeCore::Stpn);
        (config.batch_size, config.iterations) = (batch_size, iterations);
        config.checkpoint_every = iterations;
        MazeExperiment::train(&config, session)?;
        Ok(batch_size * stpn_envs::maze::EPISODE_LENGTH)
    };
    let pendulum = |core| {
        let mut config = PendulumConfig::paper(core);
        config.total_steps = (config.ppo.rollout_length * iterations) as u64;
        config.checkpoint_every = iterations;
        Pendulum::available()?;
        Pendulum::train(&config, session)?;
        Ok(config.ppo.rollout_length)
    };
    match case {
        "pong_a2c_stpn" => pong(PongConfig::paper(PongCore::Stpn)),
        "pong_a2c_lstm" => pong(PongConfig::paper(PongCore::Lstm)),
        // Environment steps are agent steps here: 4 frames each.
        "pong_dm_a2c_stpn" => pong(PongConfig::deepmind(PongCore::Stpn)),
        "pong_dm_a2c_lstm" => pong(PongConfig::deepmind(PongCore::Lstm)),
        "pong_dm_ppo_stpn" => pong(PongConfig::deepmind_ppo(PongCore::Stpn)),
        "pong_dm_ppo_lstm" => pong(PongConfig::deepmind_ppo(PongCore::Lstm)),
        "maze_b64" => maze(64),
        "maze_b512" => maze(512),
        "pendulum_ppo_stpnf" => pendulum(PendulumCore::Stpnf),
        "pendulum_ppo_lstm" => pendulum(PendulumCore::Lstm),
        other => bail!("unknown iteration case `{other}`"),
    }
}

/// The `seconds` column of a run's `metrics.csv`, first iteration left out.
fn read_times(folder: &Path, env_steps_per_iteration: usize) -> Result<IterationTimes> {
    let metrics = std::fs::read_to_string(folder.join("metrics.csv"))
        .context("the timed run wrote no metrics.csv")?;
    let mut lines = metrics.lines();
    let header = lines.next().unwrap_or_default();
    let column = header
        .split(',')
        .position(|name| name == "seconds")
        .context("metrics.csv has no seconds column")?;
    let mut ms: Vec<f64> = lines
        .skip(1)
        .filter_map(|line| line.split(',').nth(column)?.parse::<f64>().ok())
        .map(|seconds| seconds * 1e3)
        .collect();
    if ms.is_empty() {
        bail!("the timed run has fewer than two iterations");
    }
    ms.sort_by(f64::total_cmp);
    Ok(IterationTimes {
        ms_median: ms[ms.len() / 2],
        ms_min: ms[0],
        env_steps_per_iteration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A maze case runs the real loop for two iterations and times the second from its
    /// metrics, leaving no folder behind.
    #[test]
    fn maze_iteration_is_timed_from_the_loops_metrics() {
        let _seeded = crate::seeded_device_lock();
        let times = measure("maze_b64", Backend::Flex, 1).unwrap();
        assert_eq!(times.env_steps_per_iteration, 64 * 200);
        assert!(times.ms_median > 0.0 && times.ms_median.is_finite());
        assert_eq!(times.ms_min, times.ms_median);
        let leftover =
            std::env::temp_dir().join(format!("stpn-perf-maze_b64-{}", std::process::id()));
        assert!(!leftover.exists());
    }

    #[test]
    fn unknown_cases_are_refused() {
        let error = measure("maze_b3", Backend::Flex, 1).err().unwrap();
        assert!(
            error.to_string().contains("unknown iteration case"),
            "{error}"
        );
    }
}
