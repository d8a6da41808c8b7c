//! Advantages and value targets: generalised advantage estimation (GAE(γ, λ), Schulman et al.
//! 2016) as RLlib's `compute_advantages` computes it, for A2C (λ = 1: discounted returns minus the
//! value) and PPO (λ = 0.95). One stream of steps at a time, backwards; an episode end stops the
//! recursion, and each step's `next_value` says what follows it.

/// What follows a step, for its temporal difference `r + γ·V(next) − V`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Next {
    /// The next step of the same stream: its own value.
    Step,
    /// The episode ended here: nothing follows (a termination, or a time limit treated as one).
    EpisodeEnd,
    /// The stream stops here with the episode running (the end of a fragment), or the episode
    /// was truncated and is bootstrapped: the value of the observation it stopped at.
    Bootstrap(f64),
}

/// Advantages and value targets (`advantage + value`) of one stream.
///
/// # Panics
/// If the slices differ in length, or the last step is `Next::Step` (nothing follows it).
pub fn gae(
    rewards: &[f64],
    values: &[f64],
    next: &[Next],
    gamma: f64,
    lambda: f64,
) -> (Vec<f64>, Vec<f64>) {
    let steps = rewards.len();
    assert!(
        values.len() == steps && next.len() == steps,
        "one entry per step"
    );
    let (mut advantages, mut targets) = (vec![0.0; steps], vec![0.0; steps]);
    let mut running = 0.0;
    for step in (0..steps).rev() {
        let (next_value, continues) = match next[step] {
            Next::Step => (values[step + 1], true),
            Next::EpisodeEnd => (0.0, false),
            Next::Bootstrap(value) => (value, false),
        };
        if !continues {
            running = 0.0;
        }
        let delta = rewards[step] + gamma * next_value - values[step];
        running = delta + gamma * lambda * running;
        advantages[step] = running;
        targets[step] = running + values[step];
    }
    (advantages, targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) {
        let error = stpn_model::compare::max_abs_difference(a.iter().copied(), b.iter().copied());
        assert!(stpn_model::compare::within(error, 1e-12), "{a:?} vs {b:?}");
    }

    /// λ = 1 (A2C): the advantage is the discounted return to the episode's end minus the value.
    #[test]
    fn termination_stops_the_return() {
        let (gamma, rewards, values) = (0.9, [1.0, 0.0, 2.0], [0.5, 0.25, 1.0]);
        let next = [Next::Step, Next::Step, Next::EpisodeEnd];
        let (advantages, targets) = gae(&rewards, &values, &next, gamma, 1.0);
        let returns = [1.0 + 0.9 * 0.0 + 0.81 * 2.0, 0.0 + 0.9 * 2.0, 2.0];
        close(&targets, &returns);
        close(
            &advantages,
            &[returns[0] - 0.5, returns[1] - 0.25, returns[2] - 1.0],
        );
    }

    /// A fragment that stops mid-episode, or a bootstrapped truncation, continues the return with
    /// the value of the observation it stopped at.
    #[test]
    fn bootstrap_continues_the_return() {
        let (gamma, rewards, values) = (0.99, [1.0, 1.0], [3.0, 2.0]);
        let next = [Next::Step, Next::Bootstrap(10.0)];
        let (_, targets) = gae(&rewards, &values, &next, gamma, 1.0);
        close(
            &targets,
            &[1.0 + 0.99 * (1.0 + 0.99 * 10.0), 1.0 + 0.99 * 10.0],
        );
        // Treated as terminal instead (RLlib's time limits): no bootstrap.
        let (_, terminal) = gae(
            &rewards,
            &values,
            &[Next::Step, Next::EpisodeEnd],
            gamma,
            1.0,
        );
        close(&terminal, &[1.0 + 0.99, 1.0]);
    }

    /// An episode end in the middle of a stream: the steps before it do not see what follows.
    #[test]
    fn episodes_do_not_leak_into_each_other() {
        let (rewards, values) = ([1.0, 5.0, 7.0], [0.0, 0.0, 0.0]);
        let next = [Next::EpisodeEnd, Next::Step, Next::Bootstrap(0.0)];
        let (advantages, _) = gae(&rewards, &values, &next, 0.5, 1.0);
        close(&advantages, &[1.0, 5.0 + 0.5 * 7.0, 7.0]);
    }

    /// λ < 1 (PPO): the exponentially weighted sum of temporal differences, by hand.
    #[test]
    fn lambda_weights_the_temporal_differences() {
        let (gamma, lambda) = (0.9, 0.5);
        let (rewards, values) = ([1.0, 2.0], [0.5, 1.5]);
        let next = [Next::Step, Next::Bootstrap(4.0)];
        let delta1 = 2.0 + 0.9 * 4.0 - 1.5;
        let delta0 = 1.0 + 0.9 * 1.5 - 0.5;
        let (advantages, targets) = gae(&rewards, &values, &next, gamma, lambda);
        close(&advantages, &[delta0 + gamma * lambda * delta1, delta1]);
        close(
            &targets,
            &[delta0 + gamma * lambda * delta1 + 0.5, delta1 + 1.5],
        );
    }
}
