#!/usr/bin/env python3
"""Golden parity cases `art_hebbff_s0.json` and `art_hebbff_s5.json`: HebbFF inside the reference
associative-retrieval (ART) network, with the runner's sigmoid on F before each update.

Regenerate (needs PyTorch and a checkout of the authors' repository, NeuromorphicComputing/stpn,
which is not part of ours and is only imported at run time):

    git --git-dir=<mirror of NeuromorphicComputing/stpn> archive HEAD \
        Scripts AssociativeRetrievalTask __init__.py HebbFF | tar -x -C /tmp/authors-stpn
    python scripts/golden/art_hebbff.py --authors /tmp/authors-stpn \
        --out crates/stpn-model/tests/golden

What runs is the authors' own code, not a re-implementation: the network class the ART runner
builds (`NoEmbed_AssociativeNet` of `Scripts/Nets.py`, as `AssociativeRetrievalTask/run_art.py`
builds it for `recurrent_unit: HebbFF`), with the cell options and the activation read from the
authors' config `AssociativeRetrievalTask/config/ablation/ART_HebbFF_h26.json` (only the sizes
differ). The energy comes from the wrapper's `forward_energy` (the method the runner's evaluation
calls with `--eval-energy`); logits, final state and gradients from its `forward` (the method
training calls); the script checks that the two agree. Parameters are drawn with fixed seeds at
scales larger than the default initialisation, as in the standalone `hebbff_*` cases:
W, b, readout ~ U(-0.5, 0.5), lambda_logit ~ U(-0.5, 0.5), gamma_log_magnitude ~ U(-0.5, 0),
inputs and loss weights ~ N(0, 1). Everything runs in float64.

The package is imported under the name `STPN` (their modules import `STPN.Scripts...`). numpy is
only used by the imported code to take one logarithm at construction (HebbFF's initial lambda,
which this script overwrites); when numpy is not installed a stand-in with `log` is registered.
"""

import argparse
import contextlib
import json
import math
import os
import sys
import types


def import_authors(authors):
    """Registers the authors' checkout as the package `STPN` and returns (Nets, STPLayers)."""
    try:
        import numpy  # noqa: F401
    except ImportError:
        stand_in = types.ModuleType("numpy")
        stand_in.log = math.log
        sys.modules["numpy"] = stand_in
    package = types.ModuleType("STPN")
    package.__path__ = [os.path.abspath(authors)]
    sys.modules["STPN"] = package
    import importlib

    layers = importlib.import_module("STPN.Scripts.STPLayers")
    nets = importlib.import_module("STPN.Scripts.Nets")
    return nets, layers


SIZES = {
    # stem suffix: (seed, input, hidden, output, batch, steps), as the other art_* cases
    "s0": (0, 5, 4, 6, 3, 6),
    "s5": (5, 7, 6, 6, 2, 5),
}


def build_case(torch, nets, layers, authors, seed, input_size, hidden, output, batch, steps):
    config_path = os.path.join(
        authors, "AssociativeRetrievalTask", "config", "ablation", "ART_HebbFF_h26.json"
    )
    with open(config_path) as file:
        model_config = json.load(file)["model"]
    assert model_config["recurrent_unit"] == "HebbFF"
    assert model_config["activation"] == "functional_sigmoid"

    # The authors' constructors print; keep this script's stdout for its own report.
    with contextlib.redirect_stdout(sys.stderr):
        net = nets.NoEmbed_AssociativeNet(
            dictionary_size=input_size,
            hidden_dim=hidden,
            output_size=output,
            recurrent_unit=layers.HebbFF,
            rnn_args=model_config["rnn_args"],
            rnn_activation=model_config["activation"],
        ).double()

    generator = torch.Generator().manual_seed(seed)

    def uniform(shape, low, high):
        return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)

    def normal(shape):
        return torch.randn(shape, generator=generator, dtype=torch.float64)

    cell = net.rnn
    values = {
        "weight": uniform((hidden, input_size), -0.5, 0.5),
        "bias": uniform((hidden,), -0.5, 0.5),
        "lambda_logit": uniform((), -0.5, 0.5),
        "gamma_log_magnitude": uniform((), -0.5, 0.0),
        "readout_weight": uniform((output, hidden), -0.5, 0.5),
        "readout_bias": uniform((output,), -0.5, 0.5),
    }
    # Our names -> the authors' parameters.
    parameters = {
        "weight": cell.weight,
        "bias": cell.bias,
        "lambda_logit": cell._weight_lambda,
        "gamma_log_magnitude": cell._weight_gamma,
        "readout_weight": net.hidden2tag.weight,
        "readout_bias": net.hidden2tag.bias,
    }
    names = {id(p) for p in net.parameters()}
    assert names == {id(p) for p in parameters.values()}, "the network has other parameters"
    with torch.no_grad():
        for name, parameter in parameters.items():
            assert parameter.shape == values[name].shape, (name, parameter.shape)
            assert parameter.dtype == torch.float64, name
            parameter.copy_(values[name])

    x = normal((steps, batch, input_size))  # time first, as our files store it
    loss_weights = normal((batch, output))
    sentence = x.transpose(0, 1).contiguous()  # the wrapper takes batch first

    # Energy: the evaluation path (energy from the state entering each step, without gradient).
    logits_e, states_e, energy = net.forward_energy(sentence, None)
    # Logits and gradients: the training path.
    net.zero_grad()
    logits, states = net(sentence, None)
    final_f = states[-1][0]
    assert torch.equal(logits.detach(), logits_e.detach())
    assert torch.equal(final_f.detach(), states_e[-1][0].detach())
    assert final_f.shape == (batch, hidden, input_size)
    loss = (logits * loss_weights).sum()
    loss.backward()

    def plain(tensor):
        value = tensor.detach().tolist()
        return value

    return {
        "name": "art_hebbff",
        "description": "ART runner semantics for HebbFF: the sigmoid is applied to F itself "
        "before each update",
        "flags": {"cell": "hebbff", "squash_state": "sigmoid"},
        "input_size": input_size,
        "hidden_size": hidden,
        "output_size": output,
        "batch": batch,
        "steps": steps,
        "dtype": "f64",
        "params": {name: plain(values[name]) for name in parameters},
        "x": plain(x),
        "loss_weights": plain(loss_weights),
        "logits": plain(logits),
        "energy_per_step": plain(energy.transpose(0, 1)),  # the wrapper returns B x T
        "final_state": {"F": plain(final_f)},
        "loss": loss.item(),
        "grads": {name: plain(p.grad) for name, p in parameters.items()},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--authors", required=True, help="checkout of NeuromorphicComputing/stpn")
    parser.add_argument("--out", default="crates/stpn-model/tests/golden", help="output folder")
    args = parser.parse_args()

    import torch

    torch.set_default_dtype(torch.float64)
    nets, layers = import_authors(args.authors)
    for suffix, (seed, input_size, hidden, output, batch, steps) in SIZES.items():
        case = build_case(
            torch, nets, layers, args.authors, seed, input_size, hidden, output, batch, steps
        )
        path = os.path.join(args.out, f"art_hebbff_{suffix}.json")
        with open(path, "w") as file:
            json.dump(case, file)
        print(f"{path}: loss {case['loss']!r}")


if __name__ == "__main__":
    main()
