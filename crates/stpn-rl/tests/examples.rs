//! The library example runs and learns (a short version of `cargo run --example custom_env_ppo`).

#[path = "../examples/custom_env_ppo.rs"]
mod custom_env_ppo;

/// `examples/custom_env_ppo.rs`: PPO with an STPN core learns to carry the cue across the delay
/// on a user-defined environment (a memoryless policy earns at most 0 on average).
#[test]
fn custom_env_ppo_example_learns_cue_recall() {
    let (first, last) = custom_env_ppo::train(stpn_model::Backend::Flex, 40, 0).unwrap();
    assert!(
        last > 0.5 && last > first + 0.3,
        "mean return {first} -> {last}"
    );
}
