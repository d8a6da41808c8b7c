//! InvertedPendulum against Gymnasium: trajectories recorded from `gym.make("InvertedPendulum-v4"
//! / "-v5")` (gymnasium 1.4.0 on MuJoCo 3.17.0, scripts/record/inverted_pendulum.py) replayed from
//! the same initial states with the same actions, out-of-range ones included. Observations must
//! match to 1e-9; rewards, terminations and the 1 000-step truncation exactly.
#![cfg(feature = "mujoco")]

use serde_json::Value;
use stpn_envs::env::Env;
use stpn_envs::pendulum::{InvertedPendulum, RewardVersion};

#[test]
fn replays_gymnasium_trajectories() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/inverted_pendulum_gymnasium.json"
    );
    let recording: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let numbers = |value: &Value| -> Vec<f64> {
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    // The physics engine must be the same version for the 1e-9 bound to be meaningful.
    assert_eq!(recording["mujoco"].as_str(), Some("3.17.0"));
    let mut worst = 0f64;
    let mut replayed = 0;
    let trajectories = recording["trajectories"].as_array().unwrap();
    assert_eq!(trajectories.len(), 6);
    for (index, trajectory) in trajectories.iter().enumerate() {
        let version = match trajectory["version"].as_str().unwrap() {
            "v4" => RewardVersion::V4,
            _ => RewardVersion::V5,
        };
        let mut env = InvertedPendulum::gymnasium(version).unwrap();
        env.reset(Some(0));
        let (qpos, qvel) = (numbers(&trajectory["qpos"]), numbers(&trajectory["qvel"]));
        env.env.set_state([qpos[0], qpos[1]], [qvel[0], qvel[1]]);
        let actions = numbers(&trajectory["actions"]);
        let steps = trajectory["steps"].as_array().unwrap();
        assert_eq!(actions.len(), steps.len());
        for (step, (action, expected)) in actions.iter().zip(steps).enumerate() {
            let outcome = env.step(&vec![*action]);
            replayed += 1;
            let difference = stpn_model::compare::max_abs_difference(
                outcome.observation.iter().copied(),
                numbers(&expected["observation"]),
            );
            worst = stpn_model::compare::nan_max([worst, difference]);
            let label = format!("trajectory {index}, step {step}");
            assert_eq!(
                outcome.reward,
                expected["reward"].as_f64().unwrap(),
                "{label}"
            );
            assert_eq!(
                outcome.terminated,
                expected["terminated"].as_bool().unwrap(),
                "{label}"
            );
            assert_eq!(
                outcome.truncated,
                expected["truncated"].as_bool().unwrap(),
                "{label}"
            );
        }
    }
    assert!(worst <= 1e-9, "largest observation difference {worst:e}");
    eprintln!("{replayed} steps replayed, largest observation difference {worst:e}");
}
