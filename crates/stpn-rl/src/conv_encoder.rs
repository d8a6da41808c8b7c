//! The Pong encoder (docs/reference.md §5.1): one 84×84 frame (or `C` stacked frames), 16 filters
//! 8×8 stride 4, ReLU, 32 filters 4×4 stride 2, ReLU, flattened channel-major to 2 592 features
//! that feed the core directly (no dense layer). Its convolutions are initialised as PyTorch's
//! (`U(±1/√fan_in)`, Burn's Kaiming-uniform default with gain 1/√3).
//!
//! On the CPU backends both convolutions and their ReLUs run as one host operation of the
//! autodiff graph: each convolution runs on the image cut into stride-sized cells (space to
//! depth), as a sum of matrix products of the shifted cells with blocks of the weight, and its
//! backward as the transposed products (`Geometry`). Burn's `conv2d` stays the reference
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

/// The sizes of one convolution over `count` square images, run on cells: each image cut into
/// squares of `S × S` pixels (space to depth), a cell holding its pixels' channels as one row of
/// `S·S·C` numbers, `[N, G, G, S·S·C]` with `G = side / S`. A `K × K` kernel of stride `S` (`K` a
/// multiple of `S`) is then `B × B` blocks of `S × S` (`B = K / S`), and block `(by, bx)` adds
/// the cell `by` rows and `bx` columns further on to each output pixel: a product of the cell
/// matrix, shifted by `by·G + bx` rows, with that block's `[S·S·C, O]` weights. The products run
/// over every cell (`N·G·G` rows, the output's `N·(G − B + 1)²` among them) and need no patch
/// matrix: im2col copied each pixel `(K / S)²` times, in runs of `K·C` numbers.
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

/// One term of [`accumulate_rows`]: row `r` of the output gains row `r + offset` of `lhs` times
/// `rhs`, where that row exists.
struct Term<'a> {
    lhs: View<'a>,
    offset: isize,
    rhs: View<'a>,
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
                && side >= kernel
                && kernel % stride == 0
                && side % stride == 0,
            "the encoder's convolutions: square, unpadded, one group, kernel and side multiples of the stride"
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

    /// Blocks per side of the kernel, `K / S`.
    fn blocks(&self) -> usize {
        self.kernel / self.stride
    }

    /// Cells per side of an image, `G = side / S`.
    fn grid(&self) -> usize {
        self.side / self.stride
    }

    /// Numbers per cell, `S·S·C`.
    fn depth(&self) -> usize {
        self.stride * self.stride * self.channels
    }

    /// Cells over all images: the rows of the cell matrix and of the full output.
    fn cells(&self) -> usize {
        self.count * self.grid() * self.grid()
    }

    /// The rows between a cell and the one block `block` (`by·B + bx`) reads for it.
    fn shift(&self, block: usize) -> usize {
        let blocks = self.blocks();
        (block / blocks) * self.grid() + block % blocks
    }

    /// Where channel `channel` of pixel `(y, x)` of image `image` sits among the cells.
    fn cell_index(&self, image: usize, y: usize, x: usize, channel: usize) -> usize {
        let (stride, grid) = (self.stride, self.grid());
        let cell = (image * grid + y / stride) * grid + x / stride;
        ((cell * stride + y % stride) * stride + x % stride) * self.channels + channel
    }

    /// The row of the full output that holds output pixel `(i, j)` of image `image` (the cell
    /// at the kernel window's corner).
    fn output_row(&self, image: usize, i: usize, j: usize) -> usize {
        (image * self.grid() + i) * self.grid() + j
    }

    /// Channel-major images `[N, C, side, side]` as cells.
    fn cells_of(&self, images: &[f32]) -> Vec<f32> {
        let mut cells = Vec::with_capacity(images.len());
        self.for_each_cell_entry(|at| cells.push(images[at]));
        cells
    }

    /// [`Self::cells_of`] undone: cells back to channel-major images.
    fn images_of(&self, cells: &[f32]) -> Vec<f32> {
        let mut images = vec![0f32; cells.len()];
        let mut next = cells.iter();
        self.for_each_cell_entry(|at| images[at] = *next.next().expect("one value per entry"));
        images
    }

    /// Calls `visit` with the channel-major image index of every cell entry, in the cells'
    /// order (cell by cell; within a cell row, column, channel), without a division per entry.
    fn for_each_cell_entry(&self, mut visit: impl FnMut(usize)) {
        let (stride, grid, channels, side) = (self.stride, self.grid(), self.channels, self.side);
        for image in 0..self.count {
            let base = image * channels * side * side;
            for cell_y in 0..grid {
                for cell_x in 0..grid {
                    for y in cell_y * stride..(cell_y + 1) * stride {
                        for x in cell_x * stride..(cell_x + 1) * stride {
                            for channel in 0..channels {
                                visit(base + (channel * side + y) * side + x);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Where element `index` of the weight `[O, C, K, K]` sits among the blocks `[B·B, S·S·C,
    /// O]`: block `(ky / S)·B + kx / S`, row `((ky mod S)·S + kx mod S)·C + c`, column `o`.
    fn block_position(&self, index: usize) -> usize {
        let (k, c, o, stride) = (self.kernel, self.channels, self.outputs, self.stride);
        let (output, rest) = (index / (c * k * k), index % (c * k * k));
        let (channel, ky, kx) = (rest / (k * k), rest % (k * k) / k, rest % k);
        let block = (ky / stride) * self.blocks() + kx / stride;
        let row = ((ky % stride) * stride + kx % stride) * c + channel;
        (block * self.depth() + row) * o + output
    }

    /// The weight `[O, C, K, K]` as the blocks `[B·B, S·S·C, O]` the cells multiply.
    fn weight_blocks(&self, weight: &[f32]) -> Vec<f32> {
        let mut blocks = vec![0f32; weight.len()];
        for (index, &value) in weight.iter().enumerate() {
            blocks[self.block_position(index)] = value;
        }
        blocks
    }

    /// [`Self::weight_blocks`] undone.
    fn weight_from_blocks(&self, blocks: &[f32]) -> Vec<f32> {
        (0..blocks.len())
            .map(|index| blocks[self.block_position(index)])
            .collect()
    }

    /// Block `block`'s `[S·S·C, O]` weights.
    fn block<'a>(&self, blocks: &'a [f32], block: usize) -> &'a [f32] {
        let size = self.depth() * self.outputs;
        &blocks[block * size..(block + 1) * size]
    }

    /// The full output before bias and ReLU, `[N·G·G, O]`: at the rows of
    /// [`Self::output_row`] the convolution, elsewhere numbers to ignore.
    fn forward(&self, cells: &[f32], blocks: &[f32]) -> Vec<f32> {
        let (depth, outputs) = (self.depth(), self.outputs);
        let terms: Vec<Term> = (0..self.blocks() * self.blocks())
            .map(|block| Term {
                lhs: View::rows_of(cells, depth),
                offset: self.shift(block) as isize,
                rhs: View::rows_of(self.block(blocks, block), outputs),
            })
            .collect();
        let mut output = vec![0f32; self.cells() * outputs];
        accumulate_rows(&mut output, outputs, depth, self.cells(), &terms);
        output
    }

    /// `(image, i, j)` of every output pixel, with its row of the full output.
    fn output_pixels(&self) -> impl Iterator<Item = (usize, usize, usize, usize)> + '_ {
        let out = self.out_side;
        (0..self.count).flat_map(move |image| {
            (0..out * out).map(move |pixel| {
                let (i, j) = (pixel / out, pixel % out);
                (image, i, j, self.output_row(image, i, j))
            })
        })
    }

    /// ReLU(output + bias) at the output pixels, placed as the cells of `next`, the convolution
    /// that reads them.
    fn activate_into_cells(&self, full: &[f32], bias: &[f32], next: &Geometry) -> Vec<f32> {
        let outputs = self.outputs;
        let mut cells = vec![0f32; next.cells() * next.depth()];
        for (image, i, j, row) in self.output_pixels() {
            let at = next.cell_index(image, i, j, 0);
            for ((cell, &value), b) in cells[at..at + outputs]
                .iter_mut()
                .zip(&full[row * outputs..(row + 1) * outputs])
                .zip(bias)
            {
                *cell = (value + b).max(0.0);
            }
        }
        cells
    }

    /// ReLU(output + bias) at the output pixels, channel-major: `[N, O, out, out]`.
    fn activate_channel_major(&self, full: &[f32], bias: &[f32]) -> Vec<f32> {
        let (outputs, pixels) = (self.outputs, self.out_side * self.out_side);
        let mut features = vec![0f32; self.count * outputs * pixels];
        for (image, i, j, row) in self.output_pixels() {
            let pixel = i * self.out_side + j;
            for (channel, (&value, b)) in full[row * outputs..(row + 1) * outputs]
                .iter()
                .zip(bias)
                .enumerate()
            {
                features[(image * outputs + channel) * pixels + pixel] = (value + b).max(0.0);
            }
        }
        features
    }

    /// The full output's gradient `[N·G·G, O]` (zero off the output pixels) from the gradient
    /// of channel-major outputs `[N, O, out, out]`.
    fn full_gradient_of_channel_major(&self, gradient: &[f32]) -> Vec<f32> {
        let (outputs, pixels) = (self.outputs, self.out_side * self.out_side);
        let mut full = vec![0f32; self.cells() * outputs];
        for (image, i, j, row) in self.output_pixels() {
            let pixel = i * self.out_side + j;
            for (channel, value) in full[row * outputs..(row + 1) * outputs]
                .iter_mut()
                .enumerate()
            {
                *value = gradient[(image * outputs + channel) * pixels + pixel];
            }
        }
        full
    }

    /// The full output's gradient `[N·G·G, O]` from the gradient of the cells of `next`, the
    /// convolution that read the outputs as cells.
    fn full_gradient_of_cells(&self, gradient: &[f32], next: &Geometry) -> Vec<f32> {
        let outputs = self.outputs;
        let mut full = vec![0f32; self.cells() * outputs];
        for (image, i, j, row) in self.output_pixels() {
            let at = next.cell_index(image, i, j, 0);
            full[row * outputs..(row + 1) * outputs].copy_from_slice(&gradient[at..at + outputs]);
        }
        full
    }

    /// The gradients of the weight (`[O, C, K, K]`) and bias from `gradient`, that of the
    /// full pre-ReLU output (zero off the output pixels), and the cells the forward multiplied.
    fn parameter_gradients(&self, cells: &[f32], gradient: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let (depth, outputs, rows) = (self.depth(), self.outputs, self.cells());
        let mut bias = vec![0f32; outputs];
        for row in gradient.chunks_exact(outputs) {
            for (sum, value) in bias.iter_mut().zip(row) {
                *sum += value;
            }
        }
        // Block b's gradient is Σ over rows r of cell r + shift(b) times the gradient of r: each
        // thread sums its rows for every block, then the shares add.
        let blocks = self.blocks() * self.blocks();
        let threads = threads_for_products(rows * depth * outputs * blocks).min(rows);
        let share = rows.div_ceil(threads);
        let partial = on_threads((0..threads).collect(), |thread| {
            let range = thread * share..((thread + 1) * share).min(rows);
            let mut sums = vec![0f32; blocks * depth * outputs];
            for (block, sum) in sums.chunks_exact_mut(depth * outputs).enumerate() {
                let shift = self.shift(block);
                let end = range.end.min(rows - shift);
                if range.start >= end {
                    continue;
                }
                multiply(
                    sum,
                    (depth, outputs, end - range.start),
                    View::columns_of(
                        &cells[(range.start + shift) * depth..(end + shift) * depth],
                        depth,
                    ),
                    View::rows_of(&gradient[range.start * outputs..end * outputs], outputs),
                );
            }
            sums
        });
        let sums = partial
            .into_iter()
            .reduce(|mut total, part| {
                for (sum, value) in total.iter_mut().zip(part) {
                    *sum += value;
                }
                total
            })
            .expect("at least one thread");
        (self.weight_from_blocks(&sums), bias)
    }

    /// The gradient of the input cells from `gradient`, that of the full pre-ReLU output (zero
    /// off the output pixels): cell `r` gains the gradient of row `r − shift(b)` times block
    /// `b`'s weights transposed.
    fn input_gradient(&self, blocks: &[f32], gradient: &[f32]) -> Vec<f32> {
        let (depth, outputs) = (self.depth(), self.outputs);
        let terms: Vec<Term> = (0..self.blocks() * self.blocks())
            .map(|block| Term {
                lhs: View::rows_of(gradient, outputs),
                offset: -(self.shift(block) as isize),
                rhs: View::columns_of(self.block(blocks, block), outputs),
            })
            .collect();
        let mut cells = vec![0f32; self.cells() * depth];
        accumulate_rows(&mut cells, depth, outputs, self.cells(), &terms);
        cells
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

    /// The view from row `row` on.
    fn from_row(self, row: usize) -> Self {
        Self {
            values: &self.values[row * self.row_stride..],
            ..self
        }
    }
}

/// `output += lhs · rhs`, `output` row-major `m × n`, `lhs` `m × k`, `rhs` `k × n`.
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
            true,
            lhs.values.as_ptr(),
            lhs.column_stride as isize,
            lhs.row_stride as isize,
            rhs.values.as_ptr(),
            rhs.column_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// `output` (row-major, `n` wide) gains every term's product, its rows shared among the cores:
/// row `r` gains row `r + offset` of the term's `lhs` (`lhs_rows` rows, `k` wide) times its `rhs`
/// (`k × n`), for the rows where `r + offset` lies in `0..lhs_rows`.
fn accumulate_rows(output: &mut [f32], n: usize, k: usize, lhs_rows: usize, terms: &[Term]) {
    let m = output.len() / n;
    let threads = threads_for_products(m * n * k * terms.len()).min(m.max(1));
    let share = m.div_ceil(threads).max(1);
    let shares: Vec<(usize, &mut [f32])> = output.chunks_mut(share * n).enumerate().collect();
    on_threads(shares, |(index, rows)| {
        let first = index * share;
        let last = first + rows.len() / n;
        for term in terms {
            let start = first.max((-term.offset).max(0) as usize);
            let end = last.min((lhs_rows as isize - term.offset).max(0) as usize);
            if start >= end {
                continue;
            }
            multiply(
                &mut rows[(start - first) * n..(end - first) * n],
                (end - start, n, k),
                term.lhs.from_row((start as isize + term.offset) as usize),
                term.rhs,
            );
        }
    });
}

/// Threads for `multiply_adds` of matrix products: one per core once each gets 4 M of them
/// (starting a thread costs about what a few hundred thousand cost).
fn threads_for_products(multiply_adds: usize) -> usize {
    (multiply_adds >> 22).clamp(1, cores())
}

/// The encoder's forward on the host, and what its backward needs.
#[derive(Clone, Debug)]
struct Encoding {
    geometry: [Geometry; 2],
    /// Each convolution's input cells: the frames', then the first convolution's outputs after
    /// ReLU (whose signs also mask its gradient).
    cells: [Vec<f32>; 2],
    /// Each convolution's weight as blocks `[B·B, S·S·C, O]`.
    weight_blocks: [Vec<f32>; 2],
    /// The features after ReLU (channel-major), whose signs mask the gradient.
    features: Vec<f32>,
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
        let cells1 = first.cells_of(&frames);
        let blocks1 = first.weight_blocks(&weights[0]);
        let cells2 =
            first.activate_into_cells(&first.forward(&cells1, &blocks1), &biases[0], &second);
        let blocks2 = second.weight_blocks(&weights[1]);
        let features =
            second.activate_channel_major(&second.forward(&cells2, &blocks2), &biases[1]);
        let saved = Self {
            geometry,
            cells: [cells1, cells2],
            weight_blocks: [blocks1, blocks2],
            features: features.clone(),
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
        let [cells1, cells2] = &self.cells;
        let [blocks1, blocks2] = &self.weight_blocks;
        let gradient2 =
            second.full_gradient_of_channel_major(&through_relu(features, &self.features));
        let (weight2, bias2) = second.parameter_gradients(cells2, &gradient2);
        let hidden = through_relu(second.input_gradient(blocks2, &gradient2), cells2);
        let gradient1 = first.full_gradient_of_cells(&hidden, &second);
        let (weight1, bias1) = first.parameter_gradients(cells1, &gradient1);
        // Frames are observations: a gradient only if something upstream asks for one.
        let frames = needed[0].then(|| first.images_of(&first.input_gradient(blocks1, &gradient1)));
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
