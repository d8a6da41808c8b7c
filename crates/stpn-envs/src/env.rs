//! A small environment API that follows Gymnasium's conventions (1.x): `reset(seed)` returns the
//! first observation and an info; `step(action)` returns observation, reward, `terminated` (the
//! task ended: a terminal state) and `truncated` (cut short from outside, e.g. by a time limit)
//! and an info. Recurrent or plastic state (STPN's `h` and `F`) belongs to the agent, never to
//! the environment.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use stpn_model::kernel::threads::on_threads;

/// The set of valid observations or actions.
#[derive(Clone, Debug, PartialEq)]
pub enum Space {
    /// `{0, 1, …, n − 1}`.
    Discrete(usize),
    /// A box of `shape` with elementwise bounds (flattened row-major).
    Box {
        /// Lower bound of each element (`-inf` for none).
        low: Vec<f64>,
        /// Upper bound of each element (`inf` for none).
        high: Vec<f64>,
        /// Dimensions of the box; the bounds hold their product of elements.
        shape: Vec<usize>,
    },
}

impl Space {
    /// A box with the same bounds everywhere.
    pub fn uniform_box(low: f64, high: f64, shape: Vec<usize>) -> Self {
        let size = shape.iter().product();
        Space::Box {
            low: vec![low; size],
            high: vec![high; size],
            shape,
        }
    }

    /// Number of discrete values, or number of box elements.
    pub fn size(&self) -> usize {
        match self {
            Space::Discrete(n) => *n,
            Space::Box { shape, .. } => shape.iter().product(),
        }
    }
}

/// The return and length of a finished episode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpisodeStats {
    /// Undiscounted sum of the episode's rewards (Gymnasium's `info["episode"]["r"]`).
    pub episode_return: f64,
    /// Number of steps of the episode (Gymnasium's `info["episode"]["l"]`).
    pub length: usize,
}

/// What comes with an observation besides the reward.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Info<O> {
    /// Set on the step that ends an episode when [`RecordEpisodeStatistics`] wraps the env.
    pub episode: Option<EpisodeStats>,
    /// Set by [`SyncVectorEnv`] on the step that ends an episode: the last observation of the
    /// finished episode (the returned observation is already the new episode's first).
    pub final_observation: Option<O>,
}

impl<O> Info<O> {
    /// An info with nothing set, what an environment returns by itself.
    pub fn empty() -> Self {
        Self {
            episode: None,
            final_observation: None,
        }
    }
}

/// The result of one step.
#[derive(Clone, Debug, PartialEq)]
pub struct Step<O> {
    /// Observation after the step (in a [`SyncVectorEnv`], the new episode's first when this
    /// step ended one).
    pub observation: O,
    /// Reward for the step's action.
    pub reward: f64,
    /// The episode reached a terminal state of the task (no bootstrapping past it).
    pub terminated: bool,
    /// The episode was cut short from outside, e.g. by [`TimeLimit`] (bootstrap its value).
    pub truncated: bool,
    /// Extra information: episode statistics and the finished episode's last observation.
    pub info: Info<O>,
}

impl<O> Step<O> {
    /// Whether the episode is over (terminated or truncated).
    pub fn done(&self) -> bool {
        self.terminated || self.truncated
    }
}

/// An environment.
pub trait Env: Send {
    /// What the agent sees after each step (e.g. `Vec<f32>` of the observation space's size).
    type Observation: Clone + Send;
    /// What the agent chooses (e.g. `usize` for a discrete space, `Vec<f64>` for a box).
    type Action;

    /// Starts an episode. With a seed the environment's generator is reseeded first (same seed,
    /// same trajectory); without, it continues.
    fn reset(&mut self, seed: Option<u64>) -> (Self::Observation, Info<Self::Observation>);

    /// Advances one step. Calling it after an episode ended and before `reset` is an error of the
    /// caller; environments may panic.
    fn step(&mut self, action: &Self::Action) -> Step<Self::Observation>;

    /// The set of the observations the environment returns.
    fn observation_space(&self) -> Space;
    /// The set of the actions the environment accepts.
    fn action_space(&self) -> Space;
}

/// The generator an environment draws from: seeded by `reset(Some(seed))`, otherwise continued.
/// Before any seeded reset it is seeded with 0, so that an env is deterministic by default.
#[derive(Clone, Debug)]
pub struct EnvRng(pub ChaCha8Rng);

impl Default for EnvRng {
    fn default() -> Self {
        Self(ChaCha8Rng::seed_from_u64(0))
    }
}

impl EnvRng {
    /// Reseeds the generator with `seed` if there is one; leaves it as it is otherwise.
    pub fn reseed(&mut self, seed: Option<u64>) {
        if let Some(seed) = seed {
            self.0 = ChaCha8Rng::seed_from_u64(seed);
        }
    }
}

/// Ends episodes after `max_steps` steps by setting `truncated` (unless the episode terminated
/// on that step).
pub struct TimeLimit<E> {
    /// The wrapped environment.
    pub env: E,
    /// Steps after which an episode is truncated (Gymnasium's `max_episode_steps`).
    pub max_steps: usize,
    elapsed: usize,
}

impl<E: Env> TimeLimit<E> {
    /// Wraps `env` with a limit of `max_steps` steps per episode.
    pub fn new(env: E, max_steps: usize) -> Self {
        Self {
            env,
            max_steps,
            elapsed: 0,
        }
    }
}

impl<E: Env> Env for TimeLimit<E> {
    type Observation = E::Observation;
    type Action = E::Action;

    fn reset(&mut self, seed: Option<u64>) -> (E::Observation, Info<E::Observation>) {
        self.elapsed = 0;
        self.env.reset(seed)
    }

    fn step(&mut self, action: &E::Action) -> Step<E::Observation> {
        let mut step = self.env.step(action);
        self.elapsed += 1;
        if self.elapsed >= self.max_steps && !step.terminated {
            step.truncated = true;
        }
        step
    }

    fn observation_space(&self) -> Space {
        self.env.observation_space()
    }

    fn action_space(&self) -> Space {
        self.env.action_space()
    }
}

/// Reports the return and length of each episode in `info.episode` on its last step.
pub struct RecordEpisodeStatistics<E> {
    /// The wrapped environment.
    pub env: E,
    episode_return: f64,
    length: usize,
}

impl<E: Env> RecordEpisodeStatistics<E> {
    /// Wraps `env`, counting from the next reset.
    pub fn new(env: E) -> Self {
        Self {
            env,
            episode_return: 0.0,
            length: 0,
        }
    }
}

impl<E: Env> Env for RecordEpisodeStatistics<E> {
    type Observation = E::Observation;
    type Action = E::Action;

    fn reset(&mut self, seed: Option<u64>) -> (E::Observation, Info<E::Observation>) {
        self.episode_return = 0.0;
        self.length = 0;
        self.env.reset(seed)
    }

    fn step(&mut self, action: &E::Action) -> Step<E::Observation> {
        let mut step = self.env.step(action);
        self.episode_return += step.reward;
        self.length += 1;
        if step.done() {
            step.info.episode = Some(EpisodeStats {
                episode_return: self.episode_return,
                length: self.length,
            });
        }
        step
    }

    fn observation_space(&self) -> Space {
        self.env.observation_space()
    }

    fn action_space(&self) -> Space {
        self.env.action_space()
    }
}

/// Several copies of an environment stepped together, with automatic reset.
///
/// Convention ("same-step" auto-reset, as RLlib and Stable-Baselines3): on the step that ends an
/// episode, the env is reset at once, the returned observation is the **first observation of the
/// new episode**, `reward`, `terminated` and `truncated` are those of the finished episode's last
/// step, and the finished episode's last observation is in `info.final_observation` (bootstrap a
/// truncated episode's value from it). Env `i` is seeded with `seed + i` by [`SyncVectorEnv::reset`].
pub struct SyncVectorEnv<E> {
    /// The copies, stepped in this order; env `i` gets action `i`.
    pub envs: Vec<E>,
    /// Threads that share the copies in [`SyncVectorEnv::step`] (1: the caller's thread alone).
    threads: usize,
}

impl<E: Env> SyncVectorEnv<E> {
    /// Steps `envs` together; panics if there are none.
    pub fn new(envs: Vec<E>) -> Self {
        assert!(!envs.is_empty(), "a vector env needs at least one env");
        Self { envs, threads: 1 }
    }

    /// Steps the copies on up to `threads` threads, in contiguous blocks: for environments whose
    /// step costs far more than starting a thread (an emulated Atari frame: ~0.1 ms). Each copy
    /// steps exactly as on one thread, so the results do not depend on the count.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.clamp(1, self.envs.len());
        self
    }

    /// Number of environments.
    pub fn len(&self) -> usize {
        self.envs.len()
    }

    /// Whether there are no environments (never, as [`SyncVectorEnv::new`] requires one).
    pub fn is_empty(&self) -> bool {
        self.envs.is_empty()
    }

    /// Resets every env, env `i` with `seed + i` when a seed is given.
    pub fn reset(&mut self, seed: Option<u64>) -> Vec<E::Observation> {
        self.envs
            .iter_mut()
            .enumerate()
            .map(|(index, env)| env.reset(seed.map(|seed| seed + index as u64)).0)
            .collect()
    }

    /// Steps every env with its action; see the type's documentation for what a finished
    /// episode returns.
    pub fn step(&mut self, actions: &[E::Action]) -> Vec<Step<E::Observation>>
    where
        E::Action: Sync,
    {
        assert_eq!(actions.len(), self.envs.len(), "one action per env");
        let block = self.envs.len().div_ceil(self.threads);
        let shares: Vec<_> = self
            .envs
            .chunks_mut(block)
            .zip(actions.chunks(block))
            .collect();
        on_threads(shares, |(envs, actions)| {
            envs.iter_mut()
                .zip(actions)
                .map(|(env, action)| {
                    let mut step = env.step(action);
                    if step.done() {
                        let (first, _) = env.reset(None);
                        let last = std::mem::replace(&mut step.observation, first);
                        step.info.final_observation = Some(last);
                    }
                    step
                })
                .collect::<Vec<_>>()
        })
        .into_iter()
        .flatten()
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts up from the seed; terminates when the count reaches 3.
    struct Counter {
        start: u64,
        count: u64,
    }

    impl Env for Counter {
        type Observation = u64;
        type Action = ();

        fn reset(&mut self, seed: Option<u64>) -> (u64, Info<u64>) {
            if let Some(seed) = seed {
                self.start = seed;
            }
            self.count = 0;
            (self.start, Info::empty())
        }

        fn step(&mut self, _: &()) -> Step<u64> {
            self.count += 1;
            Step {
                observation: self.start + self.count,
                reward: 1.0,
                terminated: self.count == 3,
                truncated: false,
                info: Info::empty(),
            }
        }

        fn observation_space(&self) -> Space {
            Space::Discrete(usize::MAX)
        }

        fn action_space(&self) -> Space {
            Space::Discrete(1)
        }
    }

    fn counter() -> Counter {
        Counter { start: 0, count: 0 }
    }

    #[test]
    fn time_limit_truncates_unless_terminated() {
        let mut env = TimeLimit::new(counter(), 2);
        env.reset(Some(10));
        assert!(!env.step(&()).done());
        let step = env.step(&());
        assert!(step.truncated && !step.terminated);
        let mut env = TimeLimit::new(counter(), 3);
        env.reset(None);
        env.step(&());
        env.step(&());
        let step = env.step(&());
        assert!(
            step.terminated && !step.truncated,
            "termination wins over the limit"
        );
    }

    /// The same-step auto-reset convention: the step that ends an episode returns the new
    /// episode's first observation, the last one in `info.final_observation`, and the finished
    /// episode's reward and flags.
    #[test]
    fn vector_env_resets_on_the_same_step() {
        let mut envs = SyncVectorEnv::new(vec![
            RecordEpisodeStatistics::new(TimeLimit::new(counter(), 10)),
            RecordEpisodeStatistics::new(TimeLimit::new(counter(), 2)),
        ]);
        assert_eq!(envs.reset(Some(100)), vec![100, 101]);
        let first = envs.step(&[(), ()]);
        assert_eq!(first[0].observation, 101);
        assert_eq!(first[1].observation, 102);
        assert!(
            first
                .iter()
                .all(|step| !step.done() && step.info.final_observation.is_none())
        );

        let second = envs.step(&[(), ()]);
        // env 1 hit its time limit: truncated, observation of the new episode, last one in info
        assert!(second[1].truncated && !second[1].terminated);
        assert_eq!(
            second[1].observation, 101,
            "new episode starts again from its seed"
        );
        assert_eq!(second[1].info.final_observation, Some(103));
        assert_eq!(second[1].reward, 1.0);
        assert_eq!(
            second[1].info.episode,
            Some(EpisodeStats {
                episode_return: 2.0,
                length: 2
            })
        );

        let third = envs.step(&[(), ()]);
        assert!(third[0].terminated);
        assert_eq!(third[0].observation, 100);
        assert_eq!(third[0].info.final_observation, Some(103));
        assert_eq!(third[0].info.episode.unwrap().length, 3);
        assert_eq!(third[1].observation, 102, "env 1 continues its new episode");
    }

    /// Copies shared between threads step as on one thread: same steps, in env order.
    #[test]
    fn threads_step_the_envs_as_one_thread_does() {
        let envs = |threads| {
            let copies = (1..=5)
                .map(|limit| TimeLimit::new(counter(), limit))
                .collect();
            let mut envs = SyncVectorEnv::new(copies).with_threads(threads);
            envs.reset(Some(7));
            envs
        };
        let (mut one, mut three) = (envs(1), envs(3));
        for _ in 0..7 {
            assert_eq!(one.step(&[(); 5]), three.step(&[(); 5]));
        }
    }
}
