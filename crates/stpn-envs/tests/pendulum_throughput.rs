//! Single-thread throughput of InvertedPendulum, ignored by default:
//! `cargo test --release -p stpn-envs --features mujoco --test pendulum_throughput -- --ignored --nocapture`.
#![cfg(feature = "mujoco")]

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stpn_envs::env::Env;
use stpn_envs::pendulum::{InvertedPendulum, RewardVersion};

#[test]
#[ignore = "a measurement, not a check"]
fn throughput() {
    // What PPO's rollouts do: uniform random actions in the control range, reset when done.
    let mut env = InvertedPendulum::gymnasium(RewardVersion::V4).unwrap();
    let mut actions = ChaCha8Rng::seed_from_u64(0);
    let steps = 200_000;
    let mut episodes = 0;
    let mut checksum = 0.0;
    env.reset(Some(0));
    let start = Instant::now();
    for _ in 0..steps {
        let step = env.step(&vec![actions.random_range(-3.0..3.0)]);
        checksum += step.observation[0];
        if step.done() {
            episodes += 1;
            env.reset(None);
        }
    }
    let random = steps as f64 / start.elapsed().as_secs_f64();

    // Long episodes: a PD controller holds the pole up, so every step is a full physics step
    // without the cost of resets.
    let (mut observation, _) = env.reset(Some(0));
    let start = Instant::now();
    for _ in 0..steps {
        let push = 10.0 * observation[1] + 2.0 * observation[3] + 0.3 * observation[0];
        let step = env.step(&vec![push]);
        observation = if step.done() {
            env.reset(None).0
        } else {
            step.observation
        };
    }
    let balanced = steps as f64 / start.elapsed().as_secs_f64();
    checksum += observation[0];

    println!(
        "random actions with resets: {random:.0} env steps/s ({steps} steps, mean episode length {:.1})",
        steps as f64 / episodes as f64
    );
    println!("balanced by a PD controller: {balanced:.0} env steps/s ({steps} steps)");
    println!("(checksum {checksum})");
}
