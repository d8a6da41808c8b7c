//! An optional encoder, a recurrent core, and two linear heads on the core's output: action
//! logits (or Gaussian parameters) and a state value (docs/reference.md §4.2, §5.1). Heads are initialised as
//! PyTorch's `Linear`: `U(±1/√H)`.
//!
//! The Pong encoder (docs/reference.md §5.1) reads one 84×84 frame: 16 filters 8×8 stride 4, ReLU, 32 filters
//! 4×4 stride 2, ReLU, flattened to 2 592 features that feed the core directly (no dense layer).
//! Its convolutions are initialised as PyTorch's (`U(±1/√fan_in)`, Burn's Kaiming-uniform default
//! with gain 1/√3).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use stpn_model::RecurrentCell;
use stpn_model::cells::init;
use stpn_model::kernel::Recording;
use stpn_model::kernel::autodiff::run_kernel_recorded;

/// Configuration of the heads of an [`ActorCritic`].
#[derive(Config, Debug)]
pub struct ActorCriticConfig {
    /// Number of discrete actions.
    pub actions: usize,
}

/// The Pong convolutional encoder.
#[derive(Module, Debug)]
pub struct ConvEncoder {
    /// First convolution: 1 → 16 channels, 8×8 kernel, stride 4 (84×84 → 20×20).
    pub conv1: Conv2d,
    /// Second convolution: 16 → 32 channels, 4×4 kernel, stride 2 (20×20 → 9×9).
    pub conv2: Conv2d,
}

impl ConvEncoder {
    /// Side of the square greyscale frame the encoder reads, in pixels.
    pub const SIDE: usize = 84;
    /// Number of features per frame: 32 channels of 9×9, 2 592.
    pub const FEATURES: usize = 32 * 9 * 9;

    /// The encoder of single frames (the paper's Pong observation), with PyTorch's default
    /// initialisation of its convolutions.
    pub fn new(device: &Device) -> Self {
        Self::with_channels(1, device)
    }

    /// The encoder of `channels` stacked frames (4 with the DeepMind preprocessing).
    pub fn with_channels(channels: usize, device: &Device) -> Self {
        Self {
            conv1: Conv2dConfig::new([channels, 16], [8, 8])
                .with_stride([4, 4])
                .init(device),
            conv2: Conv2dConfig::new([16, 32], [4, 4])
                .with_stride([2, 2])
                .init(device),
        }
    }

    /// Frames `[N, C·84·84]` (`C` stacked frames, each row-major) to features `[N, 2 592]`
    /// (channel-major, as [`Self::forward_reference`] flattens them).
    ///
    /// Both convolutions run as matrix products of blocks of pixels ([`patch_convolution`]):
    /// Burn's `conv2d` on flex takes a direct path for one input channel that ran at half their
    /// speed in Pong's update (docs/performance.md).
    pub fn forward(&self, frames: Tensor<2>) -> Tensor<2> {
        let [count, width] = frames.dims();
        let channels = width / (Self::SIDE * Self::SIDE);
        let frames = frames
            .reshape([count, channels, Self::SIDE, Self::SIDE])
            .permute([0, 2, 3, 1]);
        let hidden = relu(patch_convolution(&self.conv1, frames));
        let hidden = relu(patch_convolution(&self.conv2, hidden));
        // Channels last → channel-major, the order the core's weights were trained on.
        hidden
            .permute([0, 3, 1, 2])
            .reshape([count, Self::FEATURES])
    }

    /// [`Self::forward`] through Burn's `conv2d`: the reference the patch form is tested
    /// against.
    pub fn forward_reference(&self, frames: Tensor<2>) -> Tensor<2> {
        let [count, width] = frames.dims();
        let channels = width / (Self::SIDE * Self::SIDE);
        let frames = frames.reshape([count, channels, Self::SIDE, Self::SIDE]);
        let hidden = relu(self.conv1.forward(frames));
        let hidden = relu(self.conv2.forward(hidden));
        hidden.reshape([count, Self::FEATURES])
    }
}

/// `conv` (no padding, no dilation, one group, a square kernel `K = m·S` of stride `S`) on
/// channels-last images `[N, H, W, C]`, as matrix products: channels-last outputs
/// `[N, H', W', O]`, `H' = (H − K)/S + 1`.
///
/// Cut into `S×S` blocks, the input is a grid of `(H' + m − 1) × (W' + m − 1)` blocks, and the
/// window of output `(i, j)` is the `m×m` blocks from `(i, j)` on. So the convolution is the sum,
/// over the `m²` block offsets `(d_i, d_j)`, of the block grid shifted by the offset times the
/// weight's `[S·S·C, O]` part for that offset: row `(a·S + b)·C + c` holds
/// `W[·, c, d_i·S + a, d_j·S + b]`. Every step is a reshape, permutation, slice or matrix
/// product, so autodiff gives the backward.
fn patch_convolution(conv: &Conv2d, images: Tensor<4>) -> Tensor<4> {
    let [count, height, width, channels] = images.dims();
    let [outputs, _, kernel, _] = conv.weight.dims();
    let stride = conv.stride[0];
    assert!(
        conv.stride == [stride, stride]
            && conv.kernel_size == [kernel, kernel]
            && kernel % stride == 0
            && conv.dilation == [1, 1]
            && conv.groups == 1,
        "patch_convolution needs a square kernel that is a multiple of its stride"
    );
    let blocks_per_window = kernel / stride;
    let (out_height, out_width) = (
        (height - kernel) / stride + 1,
        (width - kernel) / stride + 1,
    );
    let (grid_height, grid_width) = (
        out_height + blocks_per_window - 1,
        out_width + blocks_per_window - 1,
    );
    let block = stride * stride * channels;
    // [N, grid_h·S, grid_w·S, C] → [N, grid_h, grid_w, S·S·C]: each block's pixels in a row.
    let grid = images
        .slice([
            0..count,
            0..grid_height * stride,
            0..grid_width * stride,
            0..channels,
        ])
        .reshape([count, grid_height, stride, grid_width, stride, channels])
        .permute([0, 1, 3, 2, 4, 5])
        .reshape([count, grid_height, grid_width, block]);
    // [O, C, m, S, m, S] → [m (down), m (right), S (a), S (b), C, O]: one [S·S·C, O] matrix per
    // block offset.
    let weight = conv
        .weight
        .val()
        .reshape([
            outputs,
            channels,
            blocks_per_window,
            stride,
            blocks_per_window,
            stride,
        ])
        .permute([2, 4, 3, 5, 1, 0])
        .reshape([blocks_per_window * blocks_per_window, block, outputs]);
    let rows = count * out_height * out_width;
    // One product per block offset, summed: the shifted grids are not copied side by side
    // (a concatenation along the patch axis copies runs of only S·S·C numbers).
    let mut product = (0..blocks_per_window * blocks_per_window)
        .map(|offset| {
            let (down, right) = (offset / blocks_per_window, offset % blocks_per_window);
            let shifted = grid.clone().slice([
                0..count,
                down..down + out_height,
                right..right + out_width,
                0..block,
            ]);
            let offset_weight = weight
                .clone()
                .slice([offset..offset + 1, 0..block, 0..outputs])
                .reshape([block, outputs]);
            shifted.reshape([rows, block]).matmul(offset_weight)
        })
        .reduce(|sum, term| sum + term)
        .expect("at least one block offset");
    if let Some(bias) = &conv.bias {
        product = product + bias.val().unsqueeze_dim::<2>(0);
    }
    product.reshape([count, out_height, out_width, outputs])
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
        self.with_conv_encoder_of(1, device)
    }

    /// The same agent with the Pong encoder of `channels` stacked frames in front of its core.
    pub fn with_conv_encoder_of(self, channels: usize, device: &Device) -> Self {
        assert_eq!(self.core.input_size(), ConvEncoder::FEATURES);
        Self {
            encoder: Some(ConvEncoder::with_channels(channels, device)),
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

#[cfg(test)]
mod tests {
    use burn::tensor::{Distribution, TensorData};
    use stpn_model::{Backend, compare};

    use super::*;

    /// The patch-product encoder against Burn's `conv2d`: features, and the gradients of a
    /// weighted sum of them with respect to both convolutions' weights and biases, for one
    /// frame (the paper's Pong) and four stacked frames (the DeepMind preprocessing).
    #[test]
    fn patch_convolutions_match_burns_conv2d() {
        let device = Backend::Flex.device().unwrap().autodiff();
        device.seed(3);
        for channels in [1, 4] {
            let encoder = ConvEncoder::with_channels(channels, &device);
            let frames: Tensor<2> = Tensor::random(
                [5, channels * ConvEncoder::SIDE * ConvEncoder::SIDE],
                Distribution::Uniform(0.0, 1.0),
                &device,
            );
            let mixing: Tensor<2> = Tensor::random(
                [5, ConvEncoder::FEATURES],
                Distribution::Uniform(-1.0, 1.0),
                &device,
            );
            let gradients = |features: Tensor<2>| {
                let gradients = (features.clone() * mixing.clone()).sum().backward();
                let of = |tensor: Tensor<4>| tensor.grad(&gradients).unwrap().into_data();
                let of_bias = |bias: &Option<Param<Tensor<1>>>| {
                    bias.as_ref()
                        .unwrap()
                        .val()
                        .grad(&gradients)
                        .unwrap()
                        .into_data()
                };
                (
                    features.into_data(),
                    [
                        of(encoder.conv1.weight.val()),
                        of(encoder.conv2.weight.val()),
                        of_bias(&encoder.conv1.bias),
                        of_bias(&encoder.conv2.bias),
                    ],
                )
            };
            let (features, weight_gradients) = gradients(encoder.forward(frames.clone()));
            let (expected, expected_gradients) =
                gradients(encoder.forward_reference(frames.clone()));
            assert_close(&features, &expected, "features", channels);
            for (which, (got, want)) in weight_gradients.iter().zip(&expected_gradients).enumerate()
            {
                assert_close(got, want, &format!("gradient {which}"), channels);
            }
        }
    }

    /// Equal within float32 summation-order error (`compare` is NaN-safe).
    fn assert_close(got: &TensorData, want: &TensorData, what: &str, channels: usize) {
        let error = compare::relative_difference(
            got.try_to_vec::<f32>().unwrap(),
            want.try_to_vec::<f32>().unwrap(),
        );
        assert!(
            compare::within(error, 1e-5),
            "{what} ({channels} channels): relative error {error:e}"
        );
    }
}
