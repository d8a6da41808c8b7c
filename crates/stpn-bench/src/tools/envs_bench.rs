//! `stpn-bench envs-bench`: environment steps per second on one core, uniform random actions with
//! resets: the maze, and InvertedPendulum and Pong where their engines are built in.

use anyhow::Result;

/// Runs `env` for `steps` steps with actions from `action`, resetting at episode ends; returns
/// steps per second and the number of episodes finished.
fn time_env<E: stpn_envs::Env>(
    mut env: E,
    steps: usize,
    mut action: impl FnMut(&mut rand_chacha::ChaCha8Rng) -> E::Action,
) -> (f64, usize) {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    env.reset(Some(0));
    let mut episodes = 0;
    let started = std::time::Instant::now();
    for _ in 0..steps {
        if env.step(&action(&mut rng)).done() {
            env.reset(None);
            episodes += 1;
        }
    }
    (steps as f64 / started.elapsed().as_secs_f64(), episodes)
}

pub fn run(steps: usize) -> Result<()> {
    use rand::Rng;
    println!("{:<34} {:>14} {:>10}", "environment", "steps/s", "episodes");
    let maze = stpn_envs::TimeLimit::new(
        stpn_envs::maze::Maze::new(),
        stpn_envs::maze::EPISODE_LENGTH,
    );
    let (rate, episodes) = time_env(maze, steps, |rng| rng.random_range(0..4usize));
    println!(
        "{:<34} {rate:>14.0} {episodes:>10}",
        "maze (13x13, 200 steps)"
    );
    #[cfg(feature = "mujoco")]
    {
        use stpn_envs::pendulum::{InvertedPendulum, RewardVersion};
        let pendulum = InvertedPendulum::gymnasium(RewardVersion::V4)?;
        let (rate, episodes) = time_env(pendulum, steps, |rng| vec![rng.random_range(-3.0..3.0)]);
        println!(
            "{:<34} {rate:>14.0} {episodes:>10}",
            "InvertedPendulum (MuJoCo 3.17)"
        );
    }
    #[cfg(not(feature = "mujoco"))]
    println!(
        "{:<34} {:>14}",
        "InvertedPendulum", "not built (scripts/setup-mujoco, --features mujoco)"
    );
    #[cfg(feature = "atari")]
    {
        let pong = stpn_atari::Pong::new()?;
        let (rate, episodes) = time_env(pong, steps.min(50_000), |rng| rng.random_range(0..6usize));
        println!(
            "{:<34} {rate:>14.0} {episodes:>10}",
            "Pong (ALE 0.12.1, paper preprocessing)"
        );
    }
    #[cfg(not(feature = "atari"))]
    println!(
        "{:<34} {:>14}",
        "Pong", "not built (scripts/setup-ale, --features atari)"
    );
    Ok(())
}
