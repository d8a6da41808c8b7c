//! Your own environment, trained with `stpn-rl`'s recurrent PPO and an STPN core.
//!
//! The environment, cue recall: the first observation shows a cue `c ∈ {−1, +1}`, then
//! `DELAY` blank observations follow, then a "go" signal; the action taken on "go" is scored
//! `1 − |a − c|` and ends the episode (actions before it are ignored). A policy without memory
//! earns at most 0 on average; one that carries the cue through its recurrent and synaptic
//! state (STPNr: `h` and `F`) earns close to 1.
//!
//! ```text
//! cargo run --release --example custom_env_ppo -- [--backend flex|ndarray|wgpu] [--iterations 40]
//! ```

use std::str::FromStr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stpn_envs::Env;
use stpn_envs::env::{EnvRng, Info, Space, Step};
use stpn_model::{Backend, StpnRConfig};
use stpn_rl::ActorCriticConfig;
use stpn_rl::ppo::{self, Collector, PpoConfig};

/// Blank observations between the cue and the go signal.
const DELAY: usize = 3;

/// Observations `[cue, go]`; actions: one number in `[−1, 1]`.
#[derive(Default)]
pub struct CueRecall {
    rng: EnvRng,
    cue: f64,
    steps: usize,
}

impl Env for CueRecall {
    type Observation = Vec<f64>;
    type Action = Vec<f64>;

    fn reset(&mut self, seed: Option<u64>) -> (Vec<f64>, Info<Vec<f64>>) {
        self.rng.reseed(seed);
        self.cue = if self.rng.0.random_bool(0.5) {
            1.0
        } else {
            -1.0
        };
        self.steps = 0;
        (vec![self.cue, 0.0], Info::empty())
    }

    fn step(&mut self, action: &Vec<f64>) -> Step<Vec<f64>> {
        self.steps += 1;
        let answered = self.steps == DELAY + 2;
        let go = self.steps == DELAY + 1;
        Step {
            observation: vec![0.0, if go { 1.0 } else { 0.0 }],
            reward: if answered {
                1.0 - (action[0] - self.cue).abs()
            } else {
                0.0
            },
            terminated: answered,
            truncated: false,
            info: Info::empty(),
        }
    }

    fn observation_space(&self) -> Space {
        Space::uniform_box(-1.0, 1.0, vec![2])
    }

    fn action_space(&self) -> Space {
        Space::uniform_box(-1.0, 1.0, vec![1])
    }
}

/// Trains an STPNr agent (16 units) for `iterations` PPO iterations on `backend`; returns the
/// mean return of the episodes of the first and of the last iteration.
pub fn train(
    backend: Backend,
    iterations: usize,
    seed: u64,
) -> Result<(f64, f64), stpn_model::BackendError> {
    let device = backend.device()?.autodiff();
    device.seed(seed);
    let env = CueRecall::default();
    let (observations, actions) = (env.observation_space().size(), env.action_space().size());
    // The policy head outputs a mean and a pre-softplus scale per action dimension.
    let mut agent = ActorCriticConfig::new(2 * actions)
        .init(StpnRConfig::new(observations, 16).init(&device), &device);
    let config = PpoConfig {
        rollout_length: 1024,
        epochs: 4,
        learning_rate: 1e-3,
        ..PpoConfig::default()
    };
    let mut optimizer = stpn_rl::adam(config.adam_epsilon);
    let mut kl_coefficient = config.kl_coefficient;
    let mut collector = Collector::new(env, seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut mean_returns = Vec::with_capacity(iterations);
    for iteration in 1..=iterations {
        let episodes_before = collector.finished.len();
        let stats;
        (agent, stats) = ppo::iteration(
            agent,
            &mut optimizer,
            &mut collector,
            &config,
            &mut kl_coefficient,
            &mut rng,
            &device,
        );
        let finished = &collector.finished[episodes_before..];
        let mean = finished.iter().map(|(r, _)| r).sum::<f64>() / finished.len().max(1) as f64;
        mean_returns.push(mean);
        println!(
            "iteration {iteration}: mean return {mean:+.3} over {} episodes, policy loss {:+.4}",
            finished.len(),
            stats.policy_loss
        );
    }
    Ok((mean_returns[0], mean_returns[iterations - 1]))
}

#[allow(dead_code)] // a test includes this file for `train`
fn main() {
    let mut backend = Backend::Flex;
    let mut iterations = 40;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        let parsed = match flag.as_str() {
            "--backend" => Backend::from_str(&value)
                .map(|b| backend = b)
                .map_err(|e| e.to_string()),
            "--iterations" => match value.parse::<usize>() {
                Ok(n) if n > 0 => Ok(iterations = n),
                _ => Err(format!(
                    "--iterations takes a number above 0, not `{value}`"
                )),
            },
            _ => Err(format!(
                "unknown option `{flag}`; use --backend flex|ndarray|wgpu and --iterations N"
            )),
        };
        if let Err(message) = parsed {
            eprintln!("error: {message}");
            std::process::exit(2);
        }
    }
    match train(backend, iterations, 0) {
        Ok((first, last)) => {
            println!("mean return {first:+.3} in the first iteration, {last:+.3} in the last")
        }
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(1);
        }
    }
}
