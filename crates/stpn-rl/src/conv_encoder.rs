//! The Pong encoder (docs/reference.md §5.1): one 84×84 frame (or `C` stacked frames), 16 filters
//! 8×8 stride 4, ReLU, 32 filters 4×4 stride 2, ReLU, flattened channel-major to 2 592 features
//! that feed the core directly (no dense layer). Its convolutions are initialised as PyTorch's
//! (`U(±1/√fan_in)`, Burn's Kaiming-uniform default with gain 1/√3).
//!
//! On the CPU backends both convolutions and their ReLUs run as one host operation of the
//! autodiff graph: each convolution is a matrix of patches (im2col) times the weight reordered
//! to a matrix, and its backward the transposed products and the scatter of the patches'
//! gradients back onto the pixels (col2im). Burn's `conv2d` stays the reference
//! ([`ConvEncoder::forward_reference`], the path of the GPU backends); the two agree to float32
//! rounding (tests below).

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use stpn_model::kernel::autodiff::{HostBackward, host_node, on_host};
use stpn_model::kernel::threads::{cores, on_threads};
use stpn_model::params::host_values;

/// Configuration of a [`ConvEncoder`].
#[derive(Config, Debug)]
pub struct ConvEncoderConfig {
    /// Stacked frames per observation: 1 in the paper's Pong, 4 with the DeepMind preprocessing.
    #[config(default = 1)]
    pub channels: usize,
    /// Baselines' Atari initialisation (orthogonal weights with gain √2, zero biases) instead of
    /// PyTorch's default (the paper's).
    #[config(default = false)]
    pub orthogonal_init: bool,
}

impl ConvEncoderConfig {
    /// The encoder, with PyTorch's default initialisation of its convolutions, or Baselines'
    /// with `orthogonal_init`.
    pub fn init(&self, device: &Device) -> ConvEncoder {
        let convolution = |config: Conv2dConfig| {
            let conv = config.init(device);
            if !self.orthogonal_init {
                return conv;
            }
            let gain = std::f64::consts::SQRT_2;
            Conv2d {
                weight: Initializer::Orthogonal { gain }.init(conv.weight.dims(), device),
                bias: conv
                    .bias
                    .as_ref()
                    .map(|bias| Initializer::Zeros.init(bias.dims(), device)),
                ..conv
            }
        };
        ConvEncoder {
            conv1: convolution(Conv2dConfig::new([self.channels, 16], [8, 8]).with_stride([4, 4])),
            conv2: convolution(Conv2dConfig::new([16, 32], [4, 4]).with_stride([2, 2])),
        }
    }
}

/// The Pong convolutional encoder.
#[derive(Module, Debug)]
pub struct ConvEncoder {
    /// First convolution: C → 16 channels, 8×8 kernel, stride 4 (84×84 → 20×20).
    pub conv1: Conv2d,
    /// Second convolution: 16 → 32 channels, 4×4 kernel, stride 2 (20×20 → 9×9).
    pub conv2: Conv2d,
}

impl ConvEncoder {
    /// Side of the square greyscale frame the encoder reads, in pixels.
    pub const SIDE: usize = 84;
    /// Number of features per frame: 32 channels of 9×9, 2 592.
    pub const FEATURES: usize = 32 * 9 * 9;

    /// The encoder of single frames (the paper's Pong observation).
    pub fn new(device: &Device) -> Self {
        ConvEncoderConfig::new().init(device)
    }

    /// The encoder of `channels` stacked frames (4 with the DeepMind preprocessing).
    pub fn with_channels(channels: usize, device: &Device) -> Self {
        ConvEncoderConfig::new()
            .with_channels(channels)
            .init(device)
    }

    /// Frames `[N, C·84·84]` (`C` stacked frames, each row-major) to features `[N, 2 592]`,
    /// channel-major: the host operation on the CPU backends, Burn's `conv2d` elsewhere.
    pub fn forward(&self, frames: Tensor<2>) -> Tensor<2> {
        let (Some(bias1), Some(bias2)) = (&self.conv1.bias, &self.conv2.bias) else {
            return self.forward_reference(frames);
        };
        if !on_host(&frames) || frames.dtype() != burn::tensor::DType::F32 {
            return self.forward_reference(frames);
        }
        let [count, width] = frames.dims();
        let channels = width / (Self::SIDE * Self::SIDE);
        let first = Geometry::of(&self.conv1, count, Self::SIDE, channels);
        let second = Geometry::of(&self.conv2, count, first.out_side, first.outputs);
        let (weight1, weight2) = (self.conv1.weight.val(), self.conv2.weight.val());
        let (bias1, bias2) = (bias1.val(), bias2.val());
        let (features, saved) = Encoding::run(
            [first, second],
            host_values(frames.clone()),
            [host_values(weight1.clone()), host_values(weight2.clone())],
            [host_values(bias1.clone()), host_values(bias2.clone())],
        );
        host_node(
            [
                frames.flatten(0, 1),
                weight1.flatten(0, 3),
                bias1,
                weight2.flatten(0, 3),
                bias2,
            ],
            features,
            saved,
        )
        .reshape([count, Self::FEATURES])
    }

    /// [`Self::forward`] through Burn's `conv2d`: the reference the host operation is tested
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

/// How much of a [`ConvEncoder`] is alive on some frames: a ReLU unit whose pre-activation is
/// negative on every frame passes no gradient and never recovers (docs/rl.md, "the encoder
/// died"), and features that do not vary over frames carry nothing for the policy.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EncoderActivity {
    /// Frames probed.
    pub frames: usize,
    /// Fraction of the first convolution's ReLU outputs (16 × 20 × 20 per frame) that are
    /// positive, over all frames.
    pub first_layer_active: f64,
    /// Fraction of the first convolution's 16 filters positive somewhere on some frame.
    pub first_layer_filters_alive: f64,
    /// Fraction of the 2 592 features that are positive, over all frames.
    pub features_active: f64,
    /// Fraction of the features whose value differs between two of the frames.
    pub features_varying: f64,
}

impl ConvEncoder {
    /// [`EncoderActivity`] on `frames` `[N, C·84·84]`, through Burn's `conv2d`.
    pub fn activity(&self, frames: Tensor<2>) -> EncoderActivity {
        let [count, width] = frames.dims();
        let channels = width / (Self::SIDE * Self::SIDE);
        let frames = frames.reshape([count, channels, Self::SIDE, Self::SIDE]);
        let first = relu(self.conv1.forward(frames));
        let [_, filters, side, _] = first.dims();
        let first_values = host_values::<f32, 4>(first.clone());
        let features =
            host_values::<f32, 2>(relu(self.conv2.forward(first)).reshape([count, Self::FEATURES]));
        let fraction = |hits: usize, of: usize| hits as f64 / of.max(1) as f64;
        let per_filter = side * side;
        let filters_alive = (0..filters)
            .filter(|&filter| {
                (0..count).any(|frame| {
                    let start = (frame * filters + filter) * per_filter;
                    first_values[start..start + per_filter]
                        .iter()
                        .any(|&v| v > 0.0)
                })
            })
            .count();
        let varying = (0..Self::FEATURES)
            .filter(|&feature| {
                let first_frame = features[feature];
                (1..count).any(|frame| features[frame * Self::FEATURES + feature] != first_frame)
            })
            .count();
        EncoderActivity {
            frames: count,
            first_layer_active: positive_fraction(&first_values),
            first_layer_filters_alive: fraction(filters_alive, filters),
            features_active: positive_fraction(&features),
            features_varying: fraction(varying, Self::FEATURES),
        }
    }
}

/// The fraction of `values` above zero (of ReLU outputs: the active ones).
pub fn positive_fraction(values: &[f32]) -> f64 {
    let positive = values.iter().filter(|&&value| value > 0.0).count();
    positive as f64 / values.len().max(1) as f64
}

/// The sizes of one convolution over `count` square channels-last images.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    count: usize,
    side: usize,
    channels: usize,
    outputs: usize,
    kernel: usize,
    stride: usize,
    out_side: usize,
}

impl Geometry {
    /// `conv` (a square kernel and stride, no padding, no dilation, one group) on `count` images
    /// of `side × side` pixels with `channels` channels.
    fn of(conv: &Conv2d, count: usize, side: usize, channels: usize) -> Self {
        let [outputs, _, kernel, _] = conv.weight.dims();
        let stride = conv.stride[0];
        assert!(
            conv.stride == [stride, stride]
                && conv.kernel_size == [kernel, kernel]
                && conv.dilation == [1, 1]
                && conv.groups == 1
                && matches!(conv.padding, PaddingConfig2d::Valid)
                && side >= kernel,
            "the encoder's convolutions: square, unpadded, one group"
        );
        Self {
            count,
            side,
            channels,
            outputs,
            kernel,
            stride,
            out_side: (side - kernel) / stride + 1,
        }
    }

    /// Output pixels over all images: the rows of the patch matrix.
    fn rows(&self) -> usize {
        self.count * self.out_side * self.out_side
    }

    /// Numbers per patch, `K·K·C`: the columns of the patch matrix.
    fn patch_width(&self) -> usize {
        self.kernel * self.kernel * self.channels
    }

    /// The start, in a channels-last image batch, of row `ky` of the window of output `row`
    /// (a run of `K·C` numbers).
    fn window_row_start(&self, row: usize, ky: usize) -> usize {
        let per_image = self.out_side * self.out_side;
        let (image, pixel) = (row / per_image, row % per_image);
        let (i, j) = (pixel / self.out_side, pixel % self.out_side);
        ((image * self.side + i * self.stride + ky) * self.side + j * self.stride) * self.channels
    }

    /// The patch matrix `[rows, K·K·C]` of channels-last images (im2col): column
    /// `(ky·K + kx)·C + c` of row `(n, i, j)` is pixel `(i·S + ky, j·S + kx)`, channel `c`.
    fn patches(&self, images: &[f32]) -> Vec<f32> {
        let run = self.kernel * self.channels;
        let mut patches = Vec::with_capacity(self.rows() * self.patch_width());
        for row in 0..self.rows() {
            for ky in 0..self.kernel {
                let start = self.window_row_start(row, ky);
                patches.extend_from_slice(&images[start..start + run]);
            }
        }
        patches
    }

    /// Adds each patch's gradient onto the pixels it was taken from (col2im): the gradient of
    /// the channels-last images.
    fn scatter_patches(&self, patch_gradients: &[f32]) -> Vec<f32> {
        let run = self.kernel * self.channels;
        let mut images = vec![0f32; self.count * self.side * self.side * self.channels];
        for (row, patch) in patch_gradients.chunks_exact(self.patch_width()).enumerate() {
            for (ky, values) in patch.chunks_exact(run).enumerate() {
                let start = self.window_row_start(row, ky);
                for (pixel, value) in images[start..start + run].iter_mut().zip(values) {
                    *pixel += value;
                }
            }
        }
        images
    }

    /// Where element `index` of the weight `[O, C, K, K]` sits in the `[K·K·C, O]` matrix the
    /// patches multiply: row `(ky·K + kx)·C + c`, column `o`.
    fn matrix_position(&self, index: usize) -> usize {
        let (k, c, o) = (self.kernel, self.channels, self.outputs);
        let (output, rest) = (index / (c * k * k), index % (c * k * k));
        let (channel, ky, kx) = (rest / (k * k), rest % (k * k) / k, rest % k);
        ((ky * k + kx) * c + channel) * o + output
    }

    /// The weight `[O, C, K, K]` as the matrix `[K·K·C, O]` the patches multiply.
    fn weight_matrix(&self, weight: &[f32]) -> Vec<f32> {
        let mut matrix = vec![0f32; weight.len()];
        for (index, &value) in weight.iter().enumerate() {
            matrix[self.matrix_position(index)] = value;
        }
        matrix
    }

    /// [`Self::weight_matrix`] undone: a `[K·K·C, O]` matrix back to `[O, C, K, K]`.
    fn weight_from_matrix(&self, matrix: &[f32]) -> Vec<f32> {
        (0..matrix.len())
            .map(|index| matrix[self.matrix_position(index)])
            .collect()
    }

    /// ReLU(patches · W + b), `[rows, O]`: the channels-last outputs.
    fn forward(&self, patches: &[f32], weight_matrix: &[f32], bias: &[f32]) -> Vec<f32> {
        let (width, outputs) = (self.patch_width(), self.outputs);
        let mut output = vec![0f32; self.rows() * outputs];
        multiply_rows(
            &mut output,
            outputs,
            View::rows_of(patches, width),
            View::rows_of(weight_matrix, outputs),
            width,
        );
        for row in output.chunks_exact_mut(outputs) {
            for (value, b) in row.iter_mut().zip(bias) {
                *value = (*value + b).max(0.0);
            }
        }
        output
    }

    /// The gradients of the weight (`[O, C, K, K]`) and bias from `gradient`, that of the
    /// pre-ReLU outputs `[rows, O]`, and the patches the forward multiplied.
    fn parameter_gradients(&self, patches: &[f32], gradient: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let (width, outputs) = (self.patch_width(), self.outputs);
        let mut bias = vec![0f32; outputs];
        for row in gradient.chunks_exact(outputs) {
            for (sum, value) in bias.iter_mut().zip(row) {
                *sum += value;
            }
        }
        // Wᵀ's gradient Pᵀ·G sums over rows: each thread sums its rows, then the shares add.
        let rows = self.rows();
        let threads = threads_for_products(rows * width * outputs).min(rows);
        let share = rows.div_ceil(threads);
        let partial = on_threads((0..threads).collect(), |thread| {
            let range = thread * share..((thread + 1) * share).min(rows);
            let mut matrix = vec![0f32; width * outputs];
            multiply(
                &mut matrix,
                (width, outputs, range.len()),
                View::columns_of(&patches[range.start * width..range.end * width], width),
                View::rows_of(
                    &gradient[range.start * outputs..range.end * outputs],
                    outputs,
                ),
            );
            matrix
        });
        let matrix = partial
            .into_iter()
            .reduce(|mut sum, part| {
                for (total, value) in sum.iter_mut().zip(part) {
                    *total += value;
                }
                sum
            })
            .expect("at least one thread");
        (self.weight_from_matrix(&matrix), bias)
    }

    /// The gradient of the channels-last input images from `gradient`, that of the pre-ReLU
    /// outputs `[rows, O]`: `G · Wᵀ`, scattered back onto the pixels.
    fn input_gradient(&self, weight_matrix: &[f32], gradient: &[f32]) -> Vec<f32> {
        let (width, outputs) = (self.patch_width(), self.outputs);
        let mut patch_gradients = vec![0f32; self.rows() * width];
        multiply_rows(
            &mut patch_gradients,
            width,
            View::rows_of(gradient, outputs),
            View::columns_of(weight_matrix, outputs),
            outputs,
        );
        self.scatter_patches(&patch_gradients)
    }
}

/// A matrix stored in a slice: element `(i, j)` at `i·row_stride + j·column_stride`.
#[derive(Clone, Copy)]
struct View<'a> {
    values: &'a [f32],
    row_stride: usize,
    column_stride: usize,
}

impl<'a> View<'a> {
    /// Row-major rows of `width` numbers.
    fn rows_of(values: &'a [f32], width: usize) -> Self {
        Self {
            values,
            row_stride: width,
            column_stride: 1,
        }
    }

    /// The transpose of row-major rows of `width` numbers.
    fn columns_of(values: &'a [f32], width: usize) -> Self {
        Self {
            values,
            row_stride: 1,
            column_stride: width,
        }
    }

    /// Whether an `rows × columns` matrix fits in the slice.
    fn holds(&self, rows: usize, columns: usize) -> bool {
        rows == 0
            || columns == 0
            || (rows - 1) * self.row_stride + (columns - 1) * self.column_stride < self.values.len()
    }
}

/// `output = lhs · rhs`, `output` row-major `m × n`, `lhs` `m × k`, `rhs` `k × n`.
fn multiply(output: &mut [f32], (m, n, k): (usize, usize, usize), lhs: View, rhs: View) {
    assert!(
        output.len() == m * n && lhs.holds(m, k) && rhs.holds(k, n),
        "matrix sizes"
    );
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the three matrices lie within their slices (checked above), `output` does not
    // alias the inputs (it is borrowed mutably), and gemm reads `lhs` and `rhs` only.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            output.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.values.as_ptr(),
            lhs.column_stride as isize,
            lhs.row_stride as isize,
            rhs.values.as_ptr(),
            rhs.column_stride as isize,
            rhs.row_stride as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// [`multiply`] with the rows of `output` (`n` wide) and of the row-major `lhs` (`k` wide)
/// shared among the cores.
fn multiply_rows(output: &mut [f32], n: usize, lhs: View, rhs: View, k: usize) {
    let m = output.len() / n;
    let threads = threads_for_products(m * n * k).min(m.max(1));
    let share = m.div_ceil(threads).max(1);
    let shares: Vec<(usize, &mut [f32])> = output.chunks_mut(share * n).enumerate().collect();
    on_threads(shares, |(index, rows)| {
        let first = index * share;
        let count = rows.len() / n;
        let lhs = View {
            values: &lhs.values[first * lhs.row_stride..],
            ..lhs
        };
        multiply(rows, (count, n, k), lhs, rhs);
    });
}

/// Threads for `multiply_adds` of matrix products: one per core once each gets 4 M of them
/// (starting a thread costs about what a few hundred thousand cost).
fn threads_for_products(multiply_adds: usize) -> usize {
    (multiply_adds >> 22).clamp(1, cores())
}

/// Channels of `[N, A, B]` (`A` channels of `B` pixels, channel-major) swapped to `[N, B, A]`.
fn swap_last_two(values: &[f32], count: usize, a: usize, b: usize) -> Vec<f32> {
    let mut swapped = vec![0f32; values.len()];
    for n in 0..count {
        let (from, to) = (
            &values[n * a * b..(n + 1) * a * b],
            &mut swapped[n * a * b..(n + 1) * a * b],
        );
        for i in 0..a {
            for j in 0..b {
                to[j * a + i] = from[i * b + j];
            }
        }
    }
    swapped
}

/// The encoder's forward on the host, and what its backward needs.
#[derive(Clone, Debug)]
struct Encoding {
    geometry: [Geometry; 2],
    /// Each convolution's patch matrix.
    patches: [Vec<f32>; 2],
    /// Each convolution's weight as a `[K·K·C, O]` matrix.
    weight_matrices: [Vec<f32>; 2],
    /// Each convolution's outputs after ReLU (channels-last), whose signs mask the gradient.
    outputs: [Vec<f32>; 2],
}

impl Encoding {
    /// Frames `[N, C, 84, 84]` to features `[N, 32, 9, 9]` (flat), and the saved values.
    fn run(
        geometry: [Geometry; 2],
        frames: Vec<f32>,
        weights: [Vec<f32>; 2],
        biases: [Vec<f32>; 2],
    ) -> (Vec<f32>, Self) {
        let [first, second] = geometry;
        let pixels = first.side * first.side;
        let images = if first.channels == 1 {
            frames
        } else {
            swap_last_two(&frames, first.count, first.channels, pixels)
        };
        let patches1 = first.patches(&images);
        let matrix1 = first.weight_matrix(&weights[0]);
        let hidden = first.forward(&patches1, &matrix1, &biases[0]);
        let patches2 = second.patches(&hidden);
        let matrix2 = second.weight_matrix(&weights[1]);
        let output = second.forward(&patches2, &matrix2, &biases[1]);
        let features = swap_last_two(
            &output,
            second.count,
            second.out_side * second.out_side,
            second.outputs,
        );
        let saved = Self {
            geometry,
            patches: [patches1, patches2],
            weight_matrices: [matrix1, matrix2],
            outputs: [hidden, output],
        };
        (features, saved)
    }
}

/// ReLU's backward: the gradient where the output is positive, else zero.
fn through_relu(mut gradient: Vec<f32>, output: &[f32]) -> Vec<f32> {
    for (value, &out) in gradient.iter_mut().zip(output) {
        if out <= 0.0 {
            *value = 0.0;
        }
    }
    gradient
}

/// Parents: frames, conv1's weight and bias, conv2's weight and bias.
impl HostBackward<5> for Encoding {
    fn gradients(self, features: Vec<f32>, needed: [bool; 5]) -> [Option<Vec<f32>>; 5] {
        let [first, second] = self.geometry;
        let [patches1, patches2] = &self.patches;
        let [matrix1, matrix2] = &self.weight_matrices;
        let [hidden, output] = &self.outputs;
        let gradient2 = swap_last_two(
            &features,
            second.count,
            second.outputs,
            second.out_side * second.out_side,
        );
        let gradient2 = through_relu(gradient2, output);
        let (weight2, bias2) = second.parameter_gradients(patches2, &gradient2);
        let gradient1 = through_relu(second.input_gradient(matrix2, &gradient2), hidden);
        let (weight1, bias1) = first.parameter_gradients(patches1, &gradient1);
        // Frames are observations: a gradient only if something upstream asks for one.
        let frames = needed[0].then(|| {
            let images = first.input_gradient(matrix1, &gradient1);
            if first.channels == 1 {
                images
            } else {
                swap_last_two(
                    &images,
                    first.count,
                    first.side * first.side,
                    first.channels,
                )
            }
        });
        [
            frames,
            Some(weight1),
            Some(bias1),
            Some(weight2),
            Some(bias2),
        ]
    }
}

#[cfg(test)]
mod tests {
    use burn::module::Param;
    use burn::tensor::{Distribution, TensorData};
    use stpn_model::{Backend, compare};

    use super::*;

    /// The host operation against Burn's `conv2d`: features, and the gradients of a weighted
    /// sum of them with respect to both convolutions' weights and biases and to the frames, for
    /// one frame (the paper's Pong) and four stacked frames (the DeepMind preprocessing).
    #[test]
    fn host_convolutions_match_burns_conv2d() {
        let device = Backend::Flex.device().unwrap().autodiff();
        device.seed(3);
        // 48 frames: enough work for the products to run on every core.
        for (channels, count) in [(1, 5), (4, 5), (4, 48)] {
            let encoder = ConvEncoder::with_channels(channels, &device);
            let frames: Tensor<2> = Tensor::random(
                [count, channels * ConvEncoder::SIDE * ConvEncoder::SIDE],
                Distribution::Uniform(0.0, 1.0),
                &device,
            )
            .require_grad();
            let mixing: Tensor<2> = Tensor::random(
                [count, ConvEncoder::FEATURES],
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
                        frames.grad(&gradients).unwrap().into_data(),
                        of(encoder.conv1.weight.val()),
                        of_bias(&encoder.conv1.bias),
                        of(encoder.conv2.weight.val()),
                        of_bias(&encoder.conv2.bias),
                    ],
                )
            };
            let (features, ours) = gradients(encoder.forward(frames.clone()));
            let (expected, reference) = gradients(encoder.forward_reference(frames.clone()));
            assert_close(&features, &expected, "features", channels);
            for (which, (got, want)) in ours.iter().zip(&reference).enumerate() {
                assert_close(got, want, &format!("gradient {which}"), channels);
            }
            // Without autodiff (a rollout) the same features, as a plain tensor.
            let plain = encoder.valid();
            let inference = plain.forward(frames.clone().inner());
            assert!(!inference.is_autodiff());
            assert_close(&inference.into_data(), &expected, "inference", channels);
        }
    }

    /// Baselines' initialisation: each convolution's filters, flattened, are orthogonal with
    /// norm √2 (W·Wᵀ = 2·I, 16 × 256 and 32 × 256 here), and the biases are zero.
    #[test]
    fn orthogonal_init_gives_orthogonal_filters_and_zero_biases() {
        let device = Backend::Flex.device().unwrap();
        device.seed(4);
        let encoder = ConvEncoderConfig::new()
            .with_channels(4)
            .with_orthogonal_init(true)
            .init(&device);
        for conv in [&encoder.conv1, &encoder.conv2] {
            let [outputs, channels, kernel, _] = conv.weight.dims();
            let filters: Tensor<2> = conv
                .weight
                .val()
                .reshape([outputs, channels * kernel * kernel]);
            let gram = host_values::<f64, 2>(filters.clone().matmul(filters.transpose()));
            let identity =
                (0..outputs * outputs).map(|i| if i % (outputs + 1) == 0 { 2.0 } else { 0.0 });
            let error = compare::max_abs_difference(gram, identity);
            assert!(compare::within(error, 1e-4), "W·Wᵀ off 2·I by {error:e}");
            let bias = host_values::<f32, 1>(conv.bias.as_ref().unwrap().val());
            assert!(bias.iter().all(|&b| b == 0.0));
        }
    }

    /// A fresh encoder is alive on varied frames; one whose first-layer filters all sum
    /// negative, with negative biases, is dead on non-negative frames (the Adam runs' encoders,
    /// docs/rl.md): nothing passes the first ReLU and every feature is constant.
    #[test]
    fn activity_tells_a_dead_encoder_from_a_live_one() {
        let device = Backend::Flex.device().unwrap();
        device.seed(5);
        let frames = Tensor::<2>::random(
            [6, 4 * ConvEncoder::SIDE * ConvEncoder::SIDE],
            Distribution::Uniform(0.0, 1.0),
            &device,
        );
        let mut encoder = ConvEncoderConfig::new()
            .with_channels(4)
            .with_orthogonal_init(true)
            .init(&device);
        let live = encoder.activity(frames.clone());
        assert_eq!(live.frames, 6);
        assert!(live.first_layer_active > 0.2, "{live:?}");
        assert!(live.first_layer_filters_alive > 0.5, "{live:?}");
        assert!(live.features_varying > 0.2, "{live:?}");
        encoder.conv1.weight = Param::from_tensor(encoder.conv1.weight.val().abs().neg());
        encoder.conv1.bias = Some(Param::from_tensor(Tensor::full([16], -0.1, &device)));
        let dead = encoder.activity(frames);
        assert_eq!(dead.first_layer_active, 0.0, "{dead:?}");
        assert_eq!(dead.first_layer_filters_alive, 0.0, "{dead:?}");
        assert_eq!(dead.features_varying, 0.0, "{dead:?}");
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
