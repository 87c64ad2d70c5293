"""The correction ceiling of ``correction_bound.py`` at every third hidden layer of a backbone.

The PRM head reads the last layer; probing literature often finds more in middle layers. This runs
the backbone once per sequence with all hidden states and fits the same three probes (oracle out of
fold, meta-set verdicts, same-problem verdicts) at each layer, reporting AUC on the non-final
training labels and the best recovered share of flips at <= 10% clean broken (thresholds chosen
with the reference, L2 strength the best of three).

    python -u experiments/correction_bound_layers.py embedded:smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from correction_bound import best_recovery, bound_data, fit_probe, noise_draws, out_of_fold  # noqa: E402
from dreamprm_code.prm.data import examples_from_labels, examples_from_solutions  # noqa: E402
from dreamprm_code.prm.model import build_prm  # noqa: E402
from dreamprm_code.prm.train import step_auc  # noqa: E402
from meta_correction_experiment import DATA  # noqa: E402


def layer_features(prm: Any, examples: list[Any]) -> tuple[torch.Tensor, list[float], list[bool], list[str]]:
    """Hidden states of every layer at every scored step ``[steps, layers, H]``, with targets."""
    feats, targets, final, pids = [], [], [], []
    with torch.inference_mode():
        for ex in examples:
            hidden = prm.backbone(input_ids=torch.tensor([ex.input_ids]), output_hidden_states=True).hidden_states
            idx = torch.tensor(ex.step_token_index)
            feats.append(torch.stack([h[0, idx] for h in hidden], 1))
            targets += list(ex.targets)
            final += list(ex.is_final)
            pids += [ex.problem_id] * len(idx)
    return torch.cat(feats).float(), targets, final, pids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("backbone", nargs="?", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    problems, _, _, train_ref, meta, same, _ = bound_data(DATA / "pools" / "humaneval-mapcoder", 20, 30, 3, 0)
    prm, tokenizer = build_prm(args.backbone, lora_r=0)
    prm.eval()
    fmt = prm.attach_format(tokenizer, 256, 0)
    x, t, fin, pids = layer_features(prm, examples_from_labels(train_ref, fmt, problems))
    xm, tm, _, _ = layer_features(prm, examples_from_solutions(meta, fmt, problems, final_only=True, with_verdicts=True))
    xs, ts, _, _ = layer_features(prm, examples_from_solutions(same, fmt, problems, final_only=True, with_verdicts=True))
    ref = np.array([v >= 0.5 for v in t], dtype=np.int64)
    open_ = ~np.array(fin)
    r = ref[open_]
    y = torch.tensor(ref, dtype=torch.float32)
    draws = noise_draws(r, 0.3, 3)
    layers = x.shape[1]
    for layer in sorted({*range(0, layers, 3), layers - 1}):
        feats = x[:, layer]
        cells = []
        for name, source in (("oracle", None), ("meta", (xm, tm)), ("same", (xs, ts))):
            best = (0.0, -1.0)
            for l2 in (0.1, 1.0, 10.0):
                if source is None:
                    score = out_of_fold(feats, y, pids, l2)
                else:
                    score = fit_probe(source[0][:, layer], torch.tensor([float(v >= 0.5) for v in source[1]]), l2)(feats)
                s = score.numpy()[open_]
                rec = float(np.mean([best_recovery(s, noisy, r, 0.10)[0] for noisy in draws]))
                if rec > best[1]:
                    best = (step_auc(s.tolist(), (r == 1).tolist()), rec)
            cells.append(f"{name} {best[0]:.3f}/{best[1]:.0%}")
        print(f"layer {layer:2d}/{layers - 1}: " + "  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
