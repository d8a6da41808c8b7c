//! InvertedPendulum on MuJoCo 3.17, with Gymnasium's semantics (docs/reference.md §5.3; the paper used
//! `InvertedPendulum-v2`, whose model, frame skip, termination and rewards v4 keeps).
//!
//! - Model: Gymnasium's `inverted_pendulum.xml` (MIT licence, Farama Foundation), a cart on a
//!   rail (slider, range ±1) with a hinged pole; RK4, timestep 0.02, motor gear 100, control
//!   range ±3.
//! - Step: the control (clipped to ±3) is applied for 2 simulator steps (frame skip 2, dt 0.04),
//!   then `mj_rnePostConstraint`, as Gymnasium's `MujocoEnv.do_simulation`.
//! - Observation: `[cart position, pole angle, cart velocity, pole angular velocity]`.
//! - `terminated` when the observation is not finite or |angle| > 0.2.
//! - Reward: 1 on every step including the terminating one (v4, and v2 before it), or
//!   `not terminated` ([`RewardVersion::V5`]).
//! - Reset: `mj_resetData`, then U(±0.01) noise on positions and velocities, then `mj_forward`.
//! - [`InvertedPendulum::gymnasium`] adds the 1 000-step limit (`truncated`).
//!
//! Needs libmujoco 3.17.0 (scripts/setup-mujoco) and the `mujoco` feature.

use std::sync::Arc;

use mujoco_rs::prelude::{MjData, MjModel};
use rand::Rng;

use crate::env::{Env, EnvRng, Info, Space, Step, TimeLimit};

/// Gymnasium's `gymnasium/envs/mujoco/assets/inverted_pendulum.xml` (gymnasium 1.4.0, the same in
/// 1.2.0; MIT licence, © 2016 OpenAI, © 2022 Farama Foundation), without its two commented-out
/// elements (a ground plane and a second pole). Embedded so that the env needs no data files.
pub const MODEL_XML: &str = r#"<mujoco model="inverted pendulum">
	<compiler inertiafromgeom="true"/>
	<default>
		<joint armature="0" damping="1" limited="true"/>
		<geom contype="0" friction="1 0.1 0.1" rgba="0.7 0.7 0 1"/>
		<tendon/>
		<motor ctrlrange="-3 3"/>
	</default>
	<option gravity="0 0 -9.81" integrator="RK4" timestep="0.02"/>
	<size nstack="3000"/>
	<worldbody>
		<geom name="rail" pos="0 0 0" quat="0.707 0 0.707 0" rgba="0.3 0.3 0.7 1" size="0.02 1" type="capsule"/>
		<body name="cart" pos="0 0 0">
			<joint axis="1 0 0" limited="true" name="slider" pos="0 0 0" range="-1 1" type="slide"/>
			<geom name="cart" pos="0 0 0" quat="0.707 0 0.707 0" size="0.1 0.1" type="capsule"/>
			<body name="pole" pos="0 0 0">
				<joint axis="0 1 0" name="hinge" pos="0 0 0" range="-90 90" type="hinge"/>
				<geom fromto="0 0 0 0.001 0 0.6" name="cpole" rgba="0 0.7 0.7 1" size="0.049 0.3" type="capsule"/>
			</body>
		</body>
	</worldbody>
	<actuator>
		<motor ctrllimited="true" ctrlrange="-3 3" gear="100" joint="slider" name="slide"/>
	</actuator>
</mujoco>
"#;

/// Simulator steps per environment step.
pub const FRAME_SKIP: usize = 2;
/// Gymnasium's episode limit.
pub const MAX_EPISODE_STEPS: usize = 1000;
/// |pole angle| beyond which the episode terminates.
pub const ANGLE_LIMIT: f64 = 0.2;
const RESET_NOISE: f64 = 0.01;
const CONTROL_LIMIT: f64 = 3.0;

/// Which Gymnasium version's reward to give.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RewardVersion {
    /// 1 on every step, the terminating one included (v4; the paper's v2).
    #[default]
    V4,
    /// 0 on the terminating step (v5).
    V5,
}

/// The InvertedPendulum environment (without time limit; see [`InvertedPendulum::gymnasium`]).
pub struct InvertedPendulum {
    data: MjData<Arc<MjModel>>,
    rewards: RewardVersion,
    rng: EnvRng,
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
#[error("MuJoCo could not load the InvertedPendulum model: {0}")]
pub struct PendulumError(String);

impl InvertedPendulum {
    /// The environment without a time limit, its generator seeded with 0 until a seeded reset.
    pub fn new(rewards: RewardVersion) -> Result<Self, PendulumError> {
        let model = MjModel::from_xml_string(MODEL_XML)
            .map_err(|error| PendulumError(format!("{error:?}")))?;
        Ok(Self {
            data: MjData::new(Arc::new(model)),
            rewards,
            rng: EnvRng::default(),
        })
    }

    /// As `gym.make("InvertedPendulum-v4")` (or v5): with the 1 000-step limit.
    pub fn gymnasium(rewards: RewardVersion) -> Result<TimeLimit<Self>, PendulumError> {
        Ok(TimeLimit::new(Self::new(rewards)?, MAX_EPISODE_STEPS))
    }

    /// Sets positions `[cart, angle]` and velocities and recomputes the derived quantities, as
    /// Gymnasium's `set_state` (for replaying recorded trajectories).
    pub fn set_state(&mut self, qpos: [f64; 2], qvel: [f64; 2]) -> Vec<f64> {
        self.data.qpos_mut().copy_from_slice(&qpos);
        self.data.qvel_mut().copy_from_slice(&qvel);
        self.data.forward();
        self.observation()
    }

    fn observation(&self) -> Vec<f64> {
        let mut observation = self.data.qpos().to_vec();
        observation.extend_from_slice(self.data.qvel());
        observation
    }
}

impl Env for InvertedPendulum {
    type Observation = Vec<f64>;
    type Action = Vec<f64>;

    fn reset(&mut self, seed: Option<u64>) -> (Vec<f64>, Info<Vec<f64>>) {
        self.rng.reseed(seed);
        self.data.reset();
        let mut noise = [0.0; 4];
        for value in &mut noise {
            *value = self.rng.0.random_range(-RESET_NOISE..RESET_NOISE);
        }
        let observation = self.set_state([noise[0], noise[1]], [noise[2], noise[3]]);
        (observation, Info::empty())
    }

    fn step(&mut self, action: &Vec<f64>) -> Step<Vec<f64>> {
        assert_eq!(action.len(), 1, "InvertedPendulum takes one action");
        self.data.ctrl_mut()[0] = action[0].clamp(-CONTROL_LIMIT, CONTROL_LIMIT);
        for _ in 0..FRAME_SKIP {
            self.data.step();
        }
        self.data.rne_post_constraint();
        let observation = self.observation();
        let terminated = !observation.iter().all(|value| value.is_finite())
            || observation[1].abs() > ANGLE_LIMIT;
        let reward = match self.rewards {
            RewardVersion::V4 => 1.0,
            RewardVersion::V5 => f64::from(u8::from(!terminated)),
        };
        Step {
            observation,
            reward,
            terminated,
            truncated: false,
            info: Info::empty(),
        }
    }

    fn observation_space(&self) -> Space {
        Space::uniform_box(f64::NEG_INFINITY, f64::INFINITY, vec![4])
    }

    fn action_space(&self) -> Space {
        Space::uniform_box(-CONTROL_LIMIT, CONTROL_LIMIT, vec![1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_noise_is_small_and_seeded() {
        let mut env = InvertedPendulum::new(RewardVersion::V4).unwrap();
        let (first, _) = env.reset(Some(3));
        assert!(first.iter().all(|value| value.abs() <= RESET_NOISE));
        assert!(first.iter().any(|value| *value != 0.0));
        let (again, _) = env.reset(Some(3));
        assert_eq!(first, again);
        let (other, _) = env.reset(Some(4));
        assert_ne!(first, other);
    }

    /// Over many resets the noise stays inside ±0.01 and spreads over the whole range.
    #[test]
    fn reset_noise_covers_the_range_and_no_more() {
        let mut env = InvertedPendulum::new(RewardVersion::V4).unwrap();
        env.reset(Some(0));
        let (mut low, mut high) = (0f64, 0f64);
        for _ in 0..2000 {
            let (observation, _) = env.reset(None);
            for value in observation {
                assert!((-RESET_NOISE..RESET_NOISE).contains(&value), "{value}");
                low = low.min(value);
                high = high.max(value);
            }
        }
        assert!(low < -0.0099 && high > 0.0099, "noise in [{low}, {high}]");
    }

    /// The threshold applies to the angle after the step, on either side: a pole at rest near
    /// 0.19 rad falls only a few milliradians in one step and lives on; one just past 0.2 ends
    /// the episode (v5: reward 0 there).
    #[test]
    fn terminates_beyond_the_angle_limit_on_either_side() {
        let mut env = InvertedPendulum::new(RewardVersion::V5).unwrap();
        env.reset(Some(0));
        for sign in [1.0, -1.0] {
            env.set_state([0.0, sign * 0.19], [0.0, 0.0]);
            let inside = env.step(&vec![0.0]);
            let angle = inside.observation[1] * sign;
            assert!(angle > 0.19 && angle <= ANGLE_LIMIT, "{angle}");
            assert!(!inside.terminated);
            assert_eq!(inside.reward, 1.0);
            env.set_state([0.0, sign * 0.201], [0.0, 0.0]);
            let beyond = env.step(&vec![0.0]);
            assert!(beyond.observation[1] * sign > ANGLE_LIMIT);
            assert!(beyond.terminated);
            assert_eq!(beyond.reward, 0.0);
        }
    }

    #[test]
    fn same_seed_same_trajectory() {
        let run = || {
            let mut env = InvertedPendulum::gymnasium(RewardVersion::V4).unwrap();
            let mut observations = vec![env.reset(Some(11)).0];
            for step in 0..40 {
                let outcome = env.step(&vec![(step as f64 * 0.7).sin()]);
                observations.push(outcome.observation);
                if outcome.terminated {
                    break;
                }
            }
            observations
        };
        assert_eq!(run(), run());
    }

    /// A constant push tips the pole past 0.2 rad: the episode terminates there, with reward 1
    /// (v4) or 0 (v5) on that step and 1 before.
    #[test]
    fn termination_and_rewards_follow_v4_and_v5() {
        for version in [RewardVersion::V4, RewardVersion::V5] {
            let mut env = InvertedPendulum::new(version).unwrap();
            env.reset(Some(0));
            let mut steps = 0;
            loop {
                let outcome = env.step(&vec![3.0]);
                steps += 1;
                if outcome.terminated {
                    assert!(outcome.observation[1].abs() > ANGLE_LIMIT);
                    let expected = if version == RewardVersion::V4 {
                        1.0
                    } else {
                        0.0
                    };
                    assert_eq!(outcome.reward, expected);
                    break;
                }
                assert_eq!(outcome.reward, 1.0);
                assert!(outcome.observation[1].abs() <= ANGLE_LIMIT);
                assert!(steps < 100, "a constant push should tip the pole");
            }
        }
    }

    /// Actions beyond the control range act as the range's ends.
    #[test]
    fn actions_are_clipped_to_the_control_range() {
        let trajectory = |push: f64| {
            let mut env = InvertedPendulum::new(RewardVersion::V4).unwrap();
            env.reset(Some(5));
            (0..3)
                .map(|_| env.step(&vec![push]).observation)
                .collect::<Vec<_>>()
        };
        assert_eq!(trajectory(3.0), trajectory(30.0));
        assert_ne!(trajectory(3.0), trajectory(1.0));
    }

    #[test]
    fn the_time_limit_truncates_at_1000_steps() {
        let mut env = InvertedPendulum::gymnasium(RewardVersion::V4).unwrap();
        // Hold the pole upright with a PD controller on the angle until the limit.
        let mut observation = env.reset(Some(1)).0;
        for step in 1..=MAX_EPISODE_STEPS {
            let push = 10.0 * observation[1] + 2.0 * observation[3] + 0.3 * observation[0];
            let outcome = env.step(&vec![push]);
            assert!(!outcome.terminated, "fell at step {step}");
            assert_eq!(outcome.truncated, step == MAX_EPISODE_STEPS);
            observation = outcome.observation;
        }
    }
}
