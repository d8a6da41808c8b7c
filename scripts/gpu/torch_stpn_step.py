#!/usr/bin/env python3
"""One STPN training step in PyTorch, op by op (the baseline of `stpn-bench perf`, on CPU or GPU).

A step is what `stpn-bench perf` times for its kernel cases: the recurrent STPN over a batch of
sequences, a linear readout of the last hidden state, cross-entropy, full backpropagation through
time, and one Adam update. The cell follows the paper's equations (docs/reference.md §1.3) with
the operation order of the authors' PyTorch cell: the efficacy G = W + F, its row norm n, the drive
(G z) / n + b through tanh, then F <- Lambda * (F / n) + Gamma * (h z^T), with z = [x_t ; h_{t-1}].

Prints one JSON line per case with the case names of `stpn-bench perf --json` (art_h11, art_h64,
pong_core, maze) and `path` "torch", so that both can be compared in one run on one machine.

    python3 scripts/gpu/torch_stpn_step.py --device cuda --cases art_h11,art_h64,pong_core,maze
    python3 scripts/gpu/torch_stpn_step.py --device cpu --threads 2 --cases art_h11
"""
import argparse
import json
import math
import time

import torch

# case: (inputs, hidden, batch, steps, classes), the sizes of `stpn-bench perf`.
SIZES = {
    "art_h11": (37, 11, 128, 9, 37),
    "art_h64": (37, 64, 128, 9, 37),
    "pong_core": (2592, 64, 64, 20, 6),
    "maze": (17, 55, 512, 200, 4),
}


class RecurrentStpn(torch.nn.Module):
    """STPNr with per-synapse decay and gain, normalised efficacy, tanh units."""

    def __init__(self, inputs, hidden, classes):
        super().__init__()
        synapses = inputs + hidden
        bound = 1.0 / math.sqrt(hidden)
        self.hidden = hidden
        self.weight = torch.nn.Parameter(torch.empty(hidden, synapses).uniform_(-bound, bound))
        self.bias = torch.nn.Parameter(torch.empty(hidden).uniform_(-bound, bound))
        self.decay = torch.nn.Parameter(torch.empty(hidden, synapses).uniform_(0.0, 1.0))
        gain_bound = 1e-3 * bound
        self.gain = torch.nn.Parameter(torch.empty(hidden, synapses).uniform_(-gain_bound, gain_bound))
        self.readout = torch.nn.Linear(hidden, classes)

    def forward(self, sequence):
        batch, steps, inputs = sequence.shape
        hidden = sequence.new_zeros(batch, self.hidden)
        synaptic_state = sequence.new_zeros(batch, self.hidden, inputs + self.hidden)
        for t in range(steps):
            presynaptic = torch.cat((sequence[:, t], hidden), dim=1)
            efficacy = self.weight + synaptic_state
            row_norm = torch.linalg.vector_norm(efficacy, dim=2) + 1e-16
            drive = torch.einsum("bp,bhp->bh", presynaptic, efficacy) / row_norm
            hidden = torch.tanh(drive + self.bias)
            hebbian = torch.einsum("bh,bp->bhp", hidden, presynaptic)
            synaptic_state = self.decay * (synaptic_state / row_norm.unsqueeze(2)) + self.gain * hebbian
        return self.readout(hidden)


def synchronise(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(case, device, repeats, threads):
    inputs, hidden, batch, steps, classes = SIZES[case]
    torch.manual_seed(0)
    model = RecurrentStpn(inputs, hidden, classes).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    sequence = torch.randn(batch, steps, inputs, device=device)
    targets = torch.randint(0, classes, (batch,), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    warm_up = 2
    times = []
    for index in range(warm_up + repeats):
        synchronise(device)
        started = time.perf_counter()
        optimiser.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(sequence), targets).backward()
        optimiser.step()
        synchronise(device)
        if index >= warm_up:
            times.append(time.perf_counter() - started)
    times.sort()
    line = {
        "case": case,
        "backend": f"torch-{device.type}",
        "path": "torch",
        "ms_per_step": 1000.0 * times[len(times) // 2],
        "ms_min": 1000.0 * times[0],
        "repeats": len(times),
        "threads": threads,
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        line["device_name"] = torch.cuda.get_device_name(device)
        line["peak_device_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    print(json.dumps(line), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--cases", default="art_h11,art_h64", help="comma-separated: " + ", ".join(SIZES))
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per case (the maze on a CPU: 3)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    device = torch.device(options.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: PyTorch finds no CUDA device; use --device cpu")
    for case in options.cases.split(","):
        if case not in SIZES:
            parser.error(f"unknown case {case!r}; known: {', '.join(SIZES)}")
        repeats = 3 if case == "maze" and device.type == "cpu" else options.repeats
        measure(case, device, repeats, options.threads)


if __name__ == "__main__":
    main()
