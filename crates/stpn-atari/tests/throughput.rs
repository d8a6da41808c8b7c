//! Single-thread throughput, ignored by default:
//! `cargo test --release -p stpn-atari --test throughput -- --ignored --nocapture`.

use std::time::Instant;

use stpn_atari::{DeepMindConfig, DeepMindPong, Pong};
use stpn_envs::Env;

/// Pseudo-random actions that keep the ball in play (the same LCG as the fidelity tests).
fn actions() -> impl Iterator<Item = usize> {
    let mut state: u64 = 1;
    std::iter::repeat_with(move || {
        state = (state * 1_103_515_245 + 12_345) % (1 << 31);
        ((state >> 16) % 6) as usize
    })
}

#[test]
#[ignore = "a measurement, not a check"]
fn throughput() {
    let mut pong = Pong::new().unwrap_or_else(|error| panic!("{error}"));
    let frames = 100_000;

    pong.reset(Some(0));
    let start = Instant::now();
    for action in actions().take(frames) {
        if pong.act(action).terminated {
            pong.reset_emulator(None);
        }
    }
    let raw = frames as f64 / start.elapsed().as_secs_f64();

    pong.reset(Some(0));
    let steps = 30_000;
    let start = Instant::now();
    let mut checksum = 0.0f32;
    for action in actions().take(steps) {
        let step = pong.step(&action);
        checksum += step.observation[42 * 84 + 42];
        if step.done() {
            pong.reset(None);
        }
    }
    let paper = steps as f64 / start.elapsed().as_secs_f64();

    let mut deepmind = DeepMindPong::new(DeepMindConfig::default()).unwrap();
    deepmind.reset(Some(0));
    let agent_steps = 10_000;
    let start = Instant::now();
    for action in actions().take(agent_steps) {
        let step = deepmind.step(&action);
        checksum += step.observation[0] as f32;
        if step.done() {
            deepmind.reset(None);
        }
    }
    let dqn = agent_steps as f64 / start.elapsed().as_secs_f64();

    println!("raw ALE act: {raw:.0} frames/s ({frames} frames)");
    println!(
        "paper preprocessing (Env::step, 1 frame + 84x84 observation): {paper:.0} agent steps/s"
    );
    println!(
        "DeepMind preprocessing (4 frames, max-pool, 84x84, stack 4): {dqn:.0} agent steps/s ({:.0} frames/s)",
        dqn * 4.0
    );
    println!("(checksum {checksum})");
}
