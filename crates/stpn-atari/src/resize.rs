//! OpenCV's `cv2.resize` for 8-bit images, bit for bit: `INTER_LINEAR` (the paper's RLlib
//! preprocessor uses it, as the default interpolation) and `INTER_AREA` (Gymnasium's
//! `AtariPreprocessing` uses it). Both follow OpenCV 4.x `imgproc/src/resize.cpp`; the tests
//! compare with `cv2.resize` of opencv-python-headless 4.14 (`scripts/record/pong.py`).
//!
//! Images are row-major with interleaved channels (`height × width × channels` bytes).

/// A borrowed 8-bit image.
#[derive(Clone, Copy, Debug)]
pub struct Image<'a> {
    /// The pixels, `height × width × channels` bytes, row-major, channels interleaved.
    pub data: &'a [u8],
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Bytes per pixel (1 grey, 3 RGB).
    pub channels: usize,
}

impl<'a> Image<'a> {
    /// Borrows `data` as an image of these dimensions; panics if its length does not match.
    pub fn new(data: &'a [u8], height: usize, width: usize, channels: usize) -> Self {
        assert_eq!(
            data.len(),
            height * width * channels,
            "image of {height}×{width}×{channels} needs as many bytes"
        );
        Self {
            data,
            height,
            width,
            channels,
        }
    }
}

/// OpenCV's fixed-point scale of `INTER_LINEAR` coefficients for 8-bit images (11 bits).
const COEF_SCALE: f32 = 2048.0;

/// The source offset and the two fixed-point weights of each destination coordinate.
struct LinearAxis {
    offsets: Vec<usize>,
    weights: Vec<[i32; 2]>,
}

/// OpenCV's `saturate_cast<short>(float)`: round half to even, then clamp.
fn round_to_i16(value: f32) -> i32 {
    (value.round_ties_even() as i32).clamp(i16::MIN as i32, i16::MAX as i32)
}

/// OpenCV's `saturate_cast<uchar>(float)`.
fn round_to_u8(value: f32) -> u8 {
    (value.round_ties_even() as i32).clamp(0, 255) as u8
}

/// The coefficients of one axis, as `resize` computes them: `f = (float)((d + 0.5)·scale − 0.5)`
/// with `scale = 1 / (destination / source)` in double precision. Along x (`clamp` true) a
/// coordinate left of the first pixel or right of the last one takes that pixel alone; along y
/// the weights are kept and the rows are clamped instead (`clamped_rows`).
fn linear_axis(source: usize, destination: usize, clamp: bool) -> (LinearAxis, Vec<isize>) {
    let scale = 1.0 / (destination as f64 / source as f64);
    let mut offsets = Vec::with_capacity(destination);
    let mut weights = Vec::with_capacity(destination);
    let mut floors = Vec::with_capacity(destination);
    for d in 0..destination {
        let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
        let mut s = f.floor() as isize;
        let mut fraction = f - s as f32;
        floors.push(s);
        if clamp {
            if s < 0 {
                fraction = 0.0;
                s = 0;
            }
            if s >= source as isize - 1 {
                fraction = 0.0;
                s = source as isize - 1;
            }
        }
        offsets.push(s.max(0) as usize);
        weights.push([
            round_to_i16((1.0 - fraction) * COEF_SCALE),
            round_to_i16(fraction * COEF_SCALE),
        ]);
    }
    (LinearAxis { offsets, weights }, floors)
}

/// Precomputed `INTER_LINEAR` resize from one size to another, for any number of channels.
pub struct LinearResize {
    source: (usize, usize),
    destination: (usize, usize),
    x: LinearAxis,
    /// For each destination row: the two source rows, clamped into the image, and the weights.
    rows: Vec<([usize; 2], [i32; 2])>,
}

impl LinearResize {
    /// From `source` (height, width) to `destination` (height, width).
    pub fn new(source: (usize, usize), destination: (usize, usize)) -> Self {
        let (x, _) = linear_axis(source.1, destination.1, true);
        let (y, floors) = linear_axis(source.0, destination.0, false);
        let clip = |row: isize| row.clamp(0, source.0 as isize - 1) as usize;
        let rows = floors
            .iter()
            .zip(&y.weights)
            .map(|(&row, &weights)| ([clip(row), clip(row + 1)], weights))
            .collect();
        Self {
            source,
            destination,
            x,
            rows,
        }
    }

    /// The horizontal pass of one source row: `S[sx]·α₀ + S[sx + 1]·α₁` per channel (an
    /// integer with 11 fractional bits). Where `sx + 1` is outside the row, the weights are
    /// (2048, 0) and the right neighbour is clamped, which gives OpenCV's `S[sx]·2048`.
    fn horizontal(&self, row: &[u8], channels: usize, out: &mut [i32]) {
        let last = self.source.1 - 1;
        let terms = self.x.offsets.iter().zip(&self.x.weights);
        for (out, (&s, &[a0, a1])) in out.chunks_exact_mut(channels).zip(terms) {
            let left = &row[s * channels..(s + 1) * channels];
            let right = &row[(s + 1).min(last) * channels..((s + 1).min(last) + 1) * channels];
            for ((value, &left), &right) in out.iter_mut().zip(left).zip(right) {
                *value = left as i32 * a0 + right as i32 * a1;
            }
        }
    }

    /// Resizes `image` into `out` (`destination.0 × destination.1 × channels` bytes).
    pub fn apply(&self, image: Image, out: &mut [u8]) {
        assert_eq!((image.height, image.width), self.source, "source size");
        let row_length = image.width * image.channels;
        self.apply_rows(
            image.channels,
            |row, buffer| buffer.copy_from_slice(&image.data[row * row_length..][..row_length]),
            out,
        );
    }

    /// Resizes an image given row by row: `fetch(row, buffer)` writes source row `row`
    /// (`width × channels` bytes) into `buffer`. Each row is fetched at most once, and only the
    /// rows the result depends on, so a caller can convert rows (e.g. palette indices to RGB) as
    /// they are needed.
    pub fn apply_rows(
        &self,
        channels: usize,
        mut fetch: impl FnMut(usize, &mut [u8]),
        out: &mut [u8],
    ) {
        let row_length = self.destination.1 * channels;
        assert_eq!(
            out.len(),
            self.destination.0 * row_length,
            "destination size"
        );
        let mut source_row = vec![0u8; self.source.1 * channels];
        let mut upper = vec![0i32; row_length];
        let mut lower = vec![0i32; row_length];
        let mut cached = [usize::MAX; 2];
        for (out, &([r0, r1], [b0, b1])) in out.chunks_exact_mut(row_length).zip(&self.rows) {
            // Consecutive destination rows may share source rows; reuse their passes.
            if cached != [r0, r1] {
                if cached[1] == r0 {
                    std::mem::swap(&mut upper, &mut lower);
                } else {
                    fetch(r0, &mut source_row);
                    self.horizontal(&source_row, channels, &mut upper);
                }
                if r1 == r0 {
                    lower.copy_from_slice(&upper);
                } else {
                    fetch(r1, &mut source_row);
                    self.horizontal(&source_row, channels, &mut lower);
                }
                cached = [r0, r1];
            }
            // The vertical pass of OpenCV's `VResizeLinear<uchar, …>` (scalar and SIMD alike).
            for ((value, &upper), &lower) in out.iter_mut().zip(&upper).zip(&lower) {
                let sum = ((b0 * (upper >> 4)) >> 16) + ((b1 * (lower >> 4)) >> 16) + 2;
                *value = (sum >> 2) as u8;
            }
        }
    }
}

/// One term of an `INTER_AREA` table: destination index, source index, weight.
#[derive(Clone, Copy, Debug)]
struct AreaTerm {
    destination: usize,
    source: usize,
    alpha: f32,
}

/// OpenCV's `computeResizeAreaTab`: the source cells that each destination cell covers, with
/// the covered fraction of the cell as weight.
fn area_terms(source: usize, destination: usize, scale: f64) -> Vec<AreaTerm> {
    let mut terms = Vec::new();
    for d in 0..destination {
        let fs1 = d as f64 * scale;
        let fs2 = fs1 + scale;
        let cell = scale.min(source as f64 - fs1);
        let s2 = (fs2.floor() as usize).min(source - 1);
        let s1 = (fs1.ceil() as usize).min(s2);
        if s1 as f64 - fs1 > 1e-3 {
            terms.push(AreaTerm {
                destination: d,
                source: s1 - 1,
                alpha: ((s1 as f64 - fs1) / cell) as f32,
            });
        }
        for s in s1..s2 {
            terms.push(AreaTerm {
                destination: d,
                source: s,
                alpha: (1.0 / cell) as f32,
            });
        }
        if fs2 - s2 as f64 > 1e-3 {
            terms.push(AreaTerm {
                destination: d,
                source: s2,
                alpha: ((fs2 - s2 as f64).min(1.0).min(cell) / cell) as f32,
            });
        }
    }
    terms
}

/// Precomputed `INTER_AREA` resize of a one-channel image to a smaller size (OpenCV's
/// `ResizeArea_Invoker` with float accumulation; the integer-ratio fast path is not
/// implemented, so both ratios must be non-integer or the result may differ from OpenCV's).
pub struct AreaResize {
    source: (usize, usize),
    destination: (usize, usize),
    x: Vec<AreaTerm>,
    y: Vec<AreaTerm>,
}

impl AreaResize {
    /// From `source` (height, width) to a `destination` (height, width) no larger on either axis.
    pub fn new(source: (usize, usize), destination: (usize, usize)) -> Self {
        let scale_y = 1.0 / (destination.0 as f64 / source.0 as f64);
        let scale_x = 1.0 / (destination.1 as f64 / source.1 as f64);
        assert!(
            scale_x >= 1.0 && scale_y >= 1.0,
            "INTER_AREA is implemented for shrinking only"
        );
        let integer = |scale: f64| (scale - scale.round()).abs() < f64::EPSILON;
        assert!(
            !(integer(scale_x) && integer(scale_y)),
            "integer ratios take OpenCV's fast area path, which is not implemented"
        );
        Self {
            source,
            destination,
            x: area_terms(source.1, destination.1, scale_x),
            y: area_terms(source.0, destination.0, scale_y),
        }
    }

    /// Resizes a one-channel `image` into `out` (`destination.0 × destination.1` bytes).
    pub fn apply(&self, image: Image, out: &mut [u8]) {
        assert_eq!(
            image.channels, 1,
            "INTER_AREA is implemented for one channel"
        );
        assert_eq!((image.height, image.width), self.source, "source size");
        let width = self.destination.1;
        assert_eq!(out.len(), self.destination.0 * width, "destination size");
        let mut buffer = vec![0f32; width];
        let mut sum = vec![0f32; width];
        let mut previous = self.y[0].destination;
        for term in &self.y {
            let row = &image.data[term.source * image.width..(term.source + 1) * image.width];
            buffer.fill(0.0);
            for x in &self.x {
                buffer[x.destination] += row[x.source] as f32 * x.alpha;
            }
            if term.destination != previous {
                for (dx, value) in out[previous * width..(previous + 1) * width]
                    .iter_mut()
                    .enumerate()
                {
                    *value = round_to_u8(sum[dx]);
                    sum[dx] = term.alpha * buffer[dx];
                }
                previous = term.destination;
            } else {
                for (total, value) in sum.iter_mut().zip(&buffer) {
                    *total += term.alpha * value;
                }
            }
        }
        for (value, total) in out[previous * width..(previous + 1) * width]
            .iter_mut()
            .zip(&sum)
        {
            *value = round_to_u8(*total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_images_stay_constant() {
        let data = vec![200u8; 160 * 160 * 3];
        let mut out = vec![0u8; 84 * 84 * 3];
        LinearResize::new((160, 160), (84, 84)).apply(Image::new(&data, 160, 160, 3), &mut out);
        assert!(out.iter().all(|&value| value == 200));
        let data = vec![77u8; 210 * 160];
        let mut out = vec![0u8; 84 * 84];
        AreaResize::new((210, 160), (84, 84)).apply(Image::new(&data, 210, 160, 1), &mut out);
        assert!(out.iter().all(|&value| value == 77));
    }

    /// Enlarging exercises the clamped edges of both axes.
    #[test]
    fn enlarging_keeps_edge_pixels() {
        let data: Vec<u8> = (0..4 * 3).map(|index| (index * 20) as u8).collect();
        let mut out = vec![0u8; 8 * 6];
        LinearResize::new((4, 3), (8, 6)).apply(Image::new(&data, 4, 3, 1), &mut out);
        assert_eq!(out[0], data[0]);
        assert_eq!(out[8 * 6 - 1], data[4 * 3 - 1]);
    }
}
