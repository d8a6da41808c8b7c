//! An optional encoder, a recurrent core, and two linear heads on the core's output: action
//! logits (or Gaussian parameters) and a state value (docs/reference.md §4.2, §5.1). Heads are initialised as
//! PyTorch's `Linear`, `U(±1/√H)`, or as Baselines' Atari agents (`orthogonal_init`).
//!
//! Pong's agent has the convolutional encoder of [`crate::ConvEncoder`] in front of its core.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor};
use stpn_model::RecurrentCell;
use stpn_model::cells::init;
use stpn_model::kernel::Recording;
use stpn_model::kernel::autodiff::run_kernel_recorded;

use crate::{ConvEncoder, ConvEncoderConfig};

/// Configuration of the heads of an [`ActorCritic`].
#[derive(Config, Debug)]
pub struct ActorCriticConfig {
    /// Number of discrete actions.
    pub actions: usize,
    /// Baselines' Atari initialisation of the heads (orthogonal weights, gain 0.01 for the
    /// policy and 1 for the value, zero biases) instead of PyTorch's default (the paper's).
    #[config(default = false)]
    pub orthogonal_init: bool,
}

/// An optional encoder, a core, and a policy head and a value head on the core's output.
#[derive(Module, Debug)]
pub struct ActorCritic<C> {
    /// Applied to every observation before the core (Pong), or absent.
    pub encoder: Option<ConvEncoder>,
    /// The recurrent core (STPN, LSTM, …), whose outputs `[N, H]` feed both heads.
    pub core: C,
    /// Policy weights, `[A, H]`.
    pub policy_weight: Param<Tensor<2>>,
    /// Policy bias, `[A]`.
    pub policy_bias: Param<Tensor<1>>,
    /// Value weights, `[1, H]`.
    pub value_weight: Param<Tensor<2>>,
    /// Value bias, `[1]`.
    pub value_bias: Param<Tensor<1>>,
}

impl ActorCriticConfig {
    /// An agent with `core` and heads on its `H` outputs, without encoder (add one with
    /// [`ActorCritic::with_conv_encoder`]).
    pub fn init<C: RecurrentCell>(&self, core: C, device: &Device) -> ActorCritic<C> {
        let hidden = core.hidden_size();
        if self.orthogonal_init {
            let weight = |rows, gain| Initializer::Orthogonal { gain }.init([rows, hidden], device);
            return ActorCritic {
                encoder: None,
                core,
                policy_weight: weight(self.actions, 0.01),
                policy_bias: Initializer::Zeros.init([self.actions], device),
                value_weight: weight(1, 1.0),
                value_bias: Initializer::Zeros.init([1], device),
            };
        }
        let bound = 1.0 / (hidden as f64).sqrt();
        ActorCritic {
            encoder: None,
            core,
            policy_weight: init::symmetric([self.actions, hidden], bound, device),
            policy_bias: init::symmetric([self.actions], bound, device),
            value_weight: init::symmetric([1, hidden], bound, device),
            value_bias: init::symmetric([1], bound, device),
        }
    }
}

impl<C: RecurrentCell> ActorCritic<C> {
    /// The same agent with the Pong encoder in front of its core (whose input size must be
    /// [`ConvEncoder::FEATURES`]).
    pub fn with_conv_encoder(self, device: &Device) -> Self {
        self.with_conv_encoder_of(&ConvEncoderConfig::new(), device)
    }

    /// The same agent with the Pong encoder of `config` in front of its core.
    pub fn with_conv_encoder_of(self, config: &ConvEncoderConfig, device: &Device) -> Self {
        assert_eq!(self.core.input_size(), ConvEncoder::FEATURES);
        Self {
            encoder: Some(config.init(device)),
            ..self
        }
    }

    /// The core's input for observations `[N, O]`: encoded, or as they are.
    pub fn features(&self, observations: Tensor<2>) -> Tensor<2> {
        match &self.encoder {
            Some(encoder) => encoder.forward(observations),
            None => observations,
        }
    }

    /// One step of the core on features `[N, I]` (already encoded): the output `[N, H]` and the
    /// next state. Runs as a one-step sequence, so that a core with a fused path (STPNr) takes
    /// it in rollouts too (one pass over the synaptic state instead of one per tensor op).
    pub fn core_step(&self, features: Tensor<2>, state: C::State) -> (Tensor<2>, C::State) {
        let [rows, width] = features.dims();
        let (outputs, state) = self
            .core
            .forward_sequence(features.reshape([1, rows, width]), state);
        let hidden = outputs.dims()[2];
        (outputs.reshape([rows, hidden]), state)
    }

    /// The core's outputs `[T, B, H]` for observation sequences `[T, B, O]` from `state`.
    pub fn sequence(&self, observations: Tensor<3>, state: C::State) -> Tensor<3> {
        self.core
            .forward_sequence(self.sequence_features(observations), state)
            .0
    }

    /// The core's inputs `[T, B, I]` for observation sequences `[T, B, O]`: every step encoded.
    fn sequence_features(&self, observations: Tensor<3>) -> Tensor<3> {
        let [steps, batch, width] = observations.dims();
        let features = self.features(observations.reshape([steps * batch, width]));
        let features_width = features.dims()[1];
        features.reshape([steps, batch, features_width])
    }

    /// [`Self::sequence`] from the zero state for the observations a rollout recorded the core's
    /// forward on ([`stpn_model::kernel::Recording`], from [`RecurrentCell::host_kernel`]): the
    /// backward starts from the recording instead of running the forward again, when the
    /// parameters are still those it ran with (otherwise the core runs again).
    pub fn recorded_sequence(
        &self,
        observations: Tensor<3>,
        recording: Recording<f32>,
    ) -> Tensor<3> {
        let batch = observations.dims()[1];
        let inputs = self.sequence_features(observations);
        match self.core.host_kernel() {
            Some(kernel) => run_kernel_recorded(kernel.parameters, inputs, recording).0,
            None => {
                self.core
                    .forward_sequence(inputs, self.core.init_state(batch))
                    .0
            }
        }
    }

    /// The core's outputs `[T, B, H]` for observation sequences `[T, B, O]` padded at their
    /// ends, sequence `b` having `lengths[b]` real steps ([`RecurrentCell::forward_padded`]):
    /// outputs at padded steps are unspecified and must be masked out of every loss.
    pub fn padded_sequence(
        &self,
        observations: Tensor<3>,
        state: C::State,
        lengths: &[usize],
    ) -> Tensor<3> {
        self.core
            .forward_padded(self.sequence_features(observations), state, lengths)
    }

    /// Action logits `[N, A]` and values `[N]` of the core's outputs `[N, H]`.
    pub fn heads(&self, hidden: Tensor<2>) -> (Tensor<2>, Tensor<1>) {
        let logits = hidden.clone().matmul(self.policy_weight.val().transpose())
            + self.policy_bias.val().unsqueeze_dim::<2>(0);
        let values = hidden.matmul(self.value_weight.val().transpose())
            + self.value_bias.val().unsqueeze_dim::<2>(0);
        let [rows, _] = values.dims();
        (logits, values.reshape([rows]))
    }
}
