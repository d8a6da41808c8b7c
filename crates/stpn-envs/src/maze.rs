//! The grid maze of Miconi et al. (backpropamine) as the STPN reference runs it (docs/reference.md §4.1).
//!
//! A 13×13 grid: the border is wall, an interior cell `(r, c)` is a pillar iff `r` and `c` are both
//! even, except the centre `(6, 6)`, which is open: 97 free cells. Each episode draws a reward cell
//! uniformly among the 97 (the centre included) and starts the agent at the centre. Actions: 0 up
//! (r − 1), 1 down (r + 1), 2 left (c − 1), 3 right (c + 1); a move into a wall leaves the agent
//! where it is. After the move, an agent on the reward cell receives 10 and is teleported to a cell
//! drawn uniformly among the 96 other free cells. The reward cell is invisible. An episode lasts 200
//! steps (`truncated` on the last).
//!
//! Observation (17 numbers, the reference's order), made at the start of each step `t`:
//! `[0..9)` the 3×3 wall patch around the agent, row-major (1 wall, 0 free); `[9]` always 0;
//! `[10]` 1 (bias); `[11]` `t / 200`; `[12]` the reward of the previous step (0 or 10); `[13..17)`
//! the one-hot previous action — at `t = 0` the previous action counts as 0 (up).

use rand::Rng;

use crate::env::{Env, EnvRng, Info, Space, Step};

/// Side of the square grid in cells, border walls included.
pub const SIZE: usize = 13;
/// Numbers per observation (see the module documentation for their order).
pub const OBSERVATION_SIZE: usize = 17;
/// Number of actions: up, down, left, right.
pub const ACTIONS: usize = 4;
/// Steps per episode.
pub const EPISODE_LENGTH: usize = 200;
/// Reward for reaching the reward cell.
pub const REWARD: f64 = 10.0;
const CENTRE: (usize, usize) = (SIZE / 2, SIZE / 2);

/// Whether `(row, column)` is a wall of the maze.
pub fn is_wall(row: usize, column: usize) -> bool {
    let border = row == 0 || column == 0 || row == SIZE - 1 || column == SIZE - 1;
    let pillar = row.is_multiple_of(2) && column.is_multiple_of(2) && (row, column) != CENTRE;
    border || pillar
}

/// The free cells in row-major order.
pub fn free_cells() -> Vec<(usize, usize)> {
    (0..SIZE)
        .flat_map(|row| (0..SIZE).map(move |column| (row, column)))
        .filter(|&(row, column)| !is_wall(row, column))
        .collect()
}

/// The maze task; see the module documentation.
pub struct Maze {
    free: Vec<(usize, usize)>,
    rng: EnvRng,
    position: (usize, usize),
    reward_cell: (usize, usize),
    step: usize,
    previous_action: usize,
    previous_reward: f64,
}

impl Default for Maze {
    fn default() -> Self {
        Self::new()
    }
}

impl Maze {
    /// A maze whose generator is seeded with 0 until a seeded reset; call [`Env::reset`] first.
    pub fn new() -> Self {
        Self {
            free: free_cells(),
            rng: EnvRng::default(),
            position: CENTRE,
            reward_cell: CENTRE,
            step: 0,
            previous_action: 0,
            previous_reward: 0.0,
        }
    }

    /// The agent's cell.
    pub fn position(&self) -> (usize, usize) {
        self.position
    }

    /// The (hidden) reward cell.
    pub fn reward_cell(&self) -> (usize, usize) {
        self.reward_cell
    }

    fn observation(&self) -> Vec<f32> {
        let mut observation = vec![0.0; OBSERVATION_SIZE];
        let (row, column) = self.position;
        for (index, (dr, dc)) in (0..3)
            .flat_map(|dr| (0..3).map(move |dc| (dr, dc)))
            .enumerate()
        {
            observation[index] = is_wall(row + dr - 1, column + dc - 1) as u8 as f32;
        }
        observation[10] = 1.0;
        observation[11] = self.step as f32 / EPISODE_LENGTH as f32;
        observation[12] = self.previous_reward as f32;
        observation[13 + self.previous_action] = 1.0;
        observation
    }
}

impl Env for Maze {
    type Observation = Vec<f32>;
    type Action = usize;

    fn reset(&mut self, seed: Option<u64>) -> (Vec<f32>, Info<Vec<f32>>) {
        self.rng.reseed(seed);
        self.reward_cell = self.free[self.rng.0.random_range(0..self.free.len())];
        self.position = CENTRE;
        self.step = 0;
        self.previous_action = 0;
        self.previous_reward = 0.0;
        (self.observation(), Info::empty())
    }

    fn step(&mut self, action: &usize) -> Step<Vec<f32>> {
        assert!(*action < ACTIONS, "maze actions are 0..4, got {action}");
        assert!(
            self.step < EPISODE_LENGTH,
            "step after the episode ended; call reset"
        );
        let (row, column) = self.position;
        let target = match action {
            0 => (row - 1, column),
            1 => (row + 1, column),
            2 => (row, column - 1),
            _ => (row, column + 1),
        };
        if !is_wall(target.0, target.1) {
            self.position = target;
        }
        let mut reward = 0.0;
        if self.position == self.reward_cell {
            reward = REWARD;
            // Teleport to one of the other 96 free cells, uniformly.
            let reward_index = self
                .free
                .iter()
                .position(|&cell| cell == self.reward_cell)
                .unwrap();
            let mut index = self.rng.0.random_range(0..self.free.len() - 1);
            if index >= reward_index {
                index += 1;
            }
            self.position = self.free[index];
        }
        self.step += 1;
        self.previous_action = *action;
        self.previous_reward = reward;
        Step {
            observation: self.observation(),
            reward,
            terminated: false,
            truncated: self.step == EPISODE_LENGTH,
            info: Info::empty(),
        }
    }

    fn observation_space(&self) -> Space {
        Space::Box {
            low: vec![0.0; OBSERVATION_SIZE],
            high: [vec![1.0; 12], vec![REWARD], vec![1.0; 4]].concat(),
            shape: vec![OBSERVATION_SIZE],
        }
    }

    fn action_space(&self) -> Space {
        Space::Discrete(ACTIONS)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::env::{RecordEpisodeStatistics, SyncVectorEnv};

    #[test]
    fn layout_has_97_free_cells_and_an_open_centre() {
        let free = free_cells();
        assert_eq!(free.len(), 97);
        assert!(free.contains(&(6, 6)));
        assert!(
            is_wall(2, 2) && is_wall(2, 10) && is_wall(10, 4) && is_wall(0, 5) && is_wall(12, 12)
        );
        assert!(!is_wall(1, 1) && !is_wall(1, 2) && !is_wall(5, 6) && !is_wall(11, 11));
        assert_eq!(
            (1..12)
                .filter(|&r| (1..12).filter(|&c| is_wall(r, c)).count() > 0)
                .count(),
            5
        );
    }

    #[test]
    fn first_observation_is_the_references() {
        let mut maze = Maze::new();
        let (observation, _) = maze.reset(Some(3));
        // Around the centre (rows and columns 5–7) every cell is free: pillars sit at even/even.
        let expected: Vec<f32> = vec![
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, // patch
            0.0, 1.0, 0.0, 0.0, // unused, bias, time, previous reward
            1.0, 0.0, 0.0, 0.0, // previous action "up" at t = 0
        ];
        assert_eq!(observation, expected);
        let step = maze.step(&3);
        assert_eq!(step.observation[11], 1.0 / 200.0);
        assert_eq!(&step.observation[13..], &[0.0, 0.0, 0.0, 1.0]);
        assert_eq!(maze.position(), (6, 7));
        // In the top-left corner: border above and to the left, a pillar at (2, 2).
        maze.position = (1, 1);
        let patch = &maze.observation()[..9];
        assert_eq!(patch, &[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0]);
    }

    #[test]
    fn walls_block_and_the_reward_teleports() {
        let mut maze = Maze::new();
        maze.reset(Some(0));
        maze.position = (1, 1);
        maze.step(&0); // up into the border
        assert_eq!(maze.position(), (1, 1));
        maze.reward_cell = (1, 2);
        let step = maze.step(&3);
        assert_eq!(step.reward, REWARD);
        assert_ne!(maze.position(), (1, 2), "teleported off the reward cell");
        assert!(!is_wall(maze.position().0, maze.position().1));
        assert_eq!(step.observation[12], REWARD as f32);
        // Teleport targets cover the other 96 cells uniformly.
        let mut hits = std::collections::HashMap::new();
        for _ in 0..9600 {
            maze.position = (1, 1);
            maze.step = 0;
            maze.step(&3);
            *hits.entry(maze.position()).or_insert(0usize) += 1;
        }
        assert_eq!(hits.len(), 96);
        assert!(!hits.contains_key(&(1, 2)));
        assert!(
            hits.values().all(|&count| (50..160).contains(&count)),
            "{hits:?}"
        );
    }

    #[test]
    fn same_seed_same_trajectory_and_200_steps() {
        let run = |seed| {
            let mut maze = RecordEpisodeStatistics::new(Maze::new());
            maze.reset(Some(seed));
            let mut policy = ChaCha8Rng::seed_from_u64(99);
            let mut trajectory = Vec::new();
            loop {
                let step = maze.step(&policy.random_range(0..ACTIONS));
                trajectory.push((step.observation.clone(), step.reward));
                if step.done() {
                    assert!(step.truncated && !step.terminated);
                    assert_eq!(step.info.episode.unwrap().length, EPISODE_LENGTH);
                    return trajectory;
                }
            }
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }

    /// A uniform random policy collects about 5.5 reward per episode (docs/reference.md §4.5): 2 000 episodes,
    /// whose mean has a standard error of about 0.1.
    #[test]
    fn random_policy_averages_about_5_5() {
        let mut envs = SyncVectorEnv::new(
            (0..8)
                .map(|_| RecordEpisodeStatistics::new(Maze::new()))
                .collect(),
        );
        envs.reset(Some(0));
        let mut policy = ChaCha8Rng::seed_from_u64(1);
        let mut returns = Vec::new();
        while returns.len() < 2000 {
            let actions: Vec<usize> = (0..envs.len())
                .map(|_| policy.random_range(0..ACTIONS))
                .collect();
            for step in envs.step(&actions) {
                if let Some(episode) = step.info.episode {
                    returns.push(episode.episode_return);
                }
            }
        }
        let mean = returns.iter().sum::<f64>() / returns.len() as f64;
        // Printed for docs/results/maze_random_policy.txt (`--nocapture`), the figure docs quote.
        println!(
            "mean return of a uniform random policy over {} episodes: {mean:.3}",
            returns.len()
        );
        assert!((mean - 5.5).abs() < 0.5, "mean random return {mean}");
    }
}
