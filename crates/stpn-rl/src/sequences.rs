//! Sequences for truncated backpropagation through time, as RLlib builds them for recurrent
//! models: a stream of steps is cut into sequences of at most `max_length` steps that never
//! cross an episode end; each sequence starts from the core state stored when it began; for the
//! update, a set of sequences is laid out time-major and padded to `max_length`, with a mask of
//! the real steps.

/// Cuts one environment's stream of steps into sequences.
#[derive(Clone, Debug)]
pub struct SequenceCutter {
    max_length: usize,
    /// The first step of the sequence being filled, when one is open.
    open: Option<usize>,
}

impl SequenceCutter {
    /// A cutter of sequences of at most `max_length` steps (RLlib's `max_seq_len`); panics on 0.
    pub fn new(max_length: usize) -> Self {
        assert!(max_length > 0, "sequences need at least one step");
        Self {
            max_length,
            open: None,
        }
    }

    /// Called before step `index` of the stream: true when it starts a new sequence (the caller
    /// stores the core state entering it).
    pub fn starts(&mut self, index: usize) -> bool {
        if self.open.is_none() {
            self.open = Some(index);
            true
        } else {
            false
        }
    }

    /// Called after step `index`: the `(first step, length)` of the sequence it closes, if it
    /// closes one (the episode ended, the sequence is full, or the stream stops here).
    pub fn closes(
        &mut self,
        index: usize,
        episode_ended: bool,
        stream_ends: bool,
    ) -> Option<(usize, usize)> {
        let start = self.open.expect("starts() was called for this step");
        let length = index + 1 - start;
        if episode_ended || stream_ends || length == self.max_length {
            self.open = None;
            Some((start, length))
        } else {
            None
        }
    }
}

/// Time-major, padded copies `[max_length, S, width]` of per-step columns (each `[N, width]`
/// row-major) for the sequences `chosen` (indices into `spans`), and the mask `[max_length, S]`
/// of real steps. Padding is zero.
pub fn pack(
    spans: &[(usize, usize)],
    chosen: &[usize],
    max_length: usize,
    columns: &[(&[f32], usize)],
) -> (Vec<Vec<f32>>, Vec<bool>) {
    let count = chosen.len();
    let mut packed: Vec<Vec<f32>> = columns
        .iter()
        .map(|(_, width)| vec![0.0; max_length * count * width])
        .collect();
    let mut mask = vec![false; max_length * count];
    for (column, &sequence) in chosen.iter().enumerate() {
        let (start, length) = spans[sequence];
        assert!(length <= max_length, "a sequence longer than the padding");
        for offset in 0..length {
            let (source, target) = (start + offset, offset * count + column);
            mask[target] = true;
            for (into, (from, width)) in packed.iter_mut().zip(columns) {
                into[target * width..(target + 1) * width]
                    .copy_from_slice(&from[source * width..(source + 1) * width]);
            }
        }
    }
    (packed, mask)
}

/// Minibatches as RLlib forms them from a train batch of recurrent sequences: the `steps` steps
/// are cut into `steps / minibatch_size` consecutive slices of `minibatch_size` steps (a
/// remainder is left out, as RLlib leaves it), each snapped to the next sequence start at both
/// ends, so that every minibatch is a run of whole sequences and the runs tile the batch. Returns
/// indices into `sequences` (`(first step, length)`, sorted by first step). The same slices
/// serve every epoch; callers shuffle their order.
pub fn contiguous_minibatches(
    sequences: &[(usize, usize)],
    steps: usize,
    minibatch_size: usize,
) -> Vec<Vec<usize>> {
    let count = (steps / minibatch_size.max(1)).max(1);
    let mut groups = vec![Vec::new(); count];
    for (index, &(first, _)) in sequences.iter().enumerate() {
        let group = first / minibatch_size.max(1);
        if group < count {
            groups[group].push(index);
        } else if steps < minibatch_size {
            // A batch smaller than one minibatch is one minibatch.
            groups[0].push(index);
        }
    }
    groups.retain(|group| !group.is_empty());
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_stop_at_episode_ends_and_at_the_maximum_length() {
        let mut cutter = SequenceCutter::new(3);
        let ends = [false, false, false, false, true, false, false];
        let mut spans = Vec::new();
        let mut starts = Vec::new();
        for (index, &ended) in ends.iter().enumerate() {
            if cutter.starts(index) {
                starts.push(index);
            }
            spans.extend(cutter.closes(index, ended, index + 1 == ends.len()));
        }
        assert_eq!(spans, vec![(0, 3), (3, 2), (5, 2)]);
        assert_eq!(starts, vec![0, 3, 5]);
    }

    #[test]
    fn packing_is_time_major_and_padded() {
        let values = [10.0, 11.0, 12.0, 13.0, 14.0];
        let pairs = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5];
        let (packed, mask) = pack(&[(0, 3), (3, 2)], &[1, 0], 3, &[(&values, 1), (&pairs, 2)]);
        // [time][sequence]: t0 = (13, 10), t1 = (14, 11), t2 = (pad, 12).
        assert_eq!(packed[0], vec![13.0, 10.0, 14.0, 11.0, 0.0, 12.0]);
        assert_eq!(&packed[1][..4], &[3.0, 3.5, 0.0, 0.5]);
        assert_eq!(mask, vec![true, true, true, true, false, true]);
    }

    /// Minibatches are consecutive runs of whole sequences that tile the batch, one per
    /// `minibatch_size` steps, each starting at the first sequence start of its slice.
    #[test]
    fn minibatches_are_consecutive_whole_sequences() {
        // Sequences of 20 steps, with episode ends cutting some short: 7 + 20 + 20 + 13 + 20 ...
        let lengths = [7, 20, 20, 13, 20, 20, 20, 4, 20, 20, 20, 20, 12];
        let mut sequences = Vec::new();
        let mut first = 0;
        for length in lengths {
            sequences.push((first, length));
            first += length;
        }
        let steps = first; // 216
        let groups = contiguous_minibatches(&sequences, steps, 64);
        assert_eq!(groups.len(), 3); // 216 / 64; the remainder is left out, as RLlib does
        let flat: Vec<usize> = groups.concat();
        assert_eq!(
            flat,
            (0..flat.len()).collect::<Vec<_>>(),
            "consecutive, no overlap"
        );
        for (k, group) in groups.iter().enumerate() {
            assert!(group.iter().all(|&i| sequences[i].0 / 64 == k));
        }
        // A batch smaller than one minibatch is one minibatch.
        assert_eq!(
            contiguous_minibatches(&sequences[..2], 27, 64),
            vec![vec![0, 1]]
        );
    }
}
