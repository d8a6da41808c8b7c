//! The library examples run and learn (short versions of `cargo run --example ...`).

#[path = "../examples/stpn_layer.rs"]
mod stpn_layer;

/// `examples/stpn_layer.rs`: an STPN layer in a user's model learns delayed recall well above
/// chance (1/8) in a few hundred Adam steps.
#[test]
fn stpn_layer_example_learns_delayed_recall() {
    let accuracy = stpn_layer::train(stpn_model::Backend::Flex, 300, 0).unwrap();
    assert!(accuracy > 0.5, "accuracy {accuracy} (chance 0.125)");
}
