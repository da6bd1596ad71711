"""Check tests/test_llm_parity.py's FlagLLMReranker transcription, and rerankd, against the real FlagEmbedding.

FlagEmbedding 1.4.2 calls `tokenizer.prepare_for_model`, which transformers 5 removed, so it runs in its own
virtualenv with transformers 4.57; torch comes from the project's venv through a .pth file, so no CUDA build
is pulled:

    python -m venv .flagvenv
    echo "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \\
        > .flagvenv/lib/python3.11/site-packages/zz_project_venv.pth
    .flagvenv/bin/pip install --no-deps transformers==4.57.6 tokenizers==0.22.1 huggingface_hub==0.36.0 \\
        FlagEmbedding==1.4.2 peft accelerate
    .flagvenv/bin/pip install datasets==3.6.0 huggingface_hub==0.36.0
    python scripts/check_flag_llm_reranker.py --flag-python .flagvenv/bin/python

On the gemma fixture it compares, pair by pair: the input ids FlagLLMReranker.compute_score feeds the model
(padding stripped) with rerankd's and the transcription's, exactly; and the scores. FlagEmbedding pads every
batch on the left to a multiple of 8 without position ids, so its scores carry that rounding shift; the
transcription and rerankd run each pair at its own positions.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

FLAG_SIDE = r"""
import json, sys, torch
from FlagEmbedding import FlagLLMReranker
args = json.loads(sys.argv[1])
reranker = FlagLLMReranker(args["model"], use_fp16=False, devices="cpu", prompt=args["prompt"])
seen = []
forward = reranker.model.forward
def capture(*a, **kw):
    ids, mask = kw["input_ids"], kw["attention_mask"]
    seen.extend([row[m.bool()].tolist() for row, m in zip(ids, mask)])
    return forward(*a, **kw)
reranker.model.forward = capture
out = {}
for normalize in (False, True):
    for batch_size in (1, 128):
        seen.clear()
        scores = reranker.compute_score(args["pairs"], batch_size=batch_size, max_length=args["max_length"],
                                        query_max_length=args["query_max_length"], normalize=normalize)
        out[f"{normalize}-{batch_size}"] = {"scores": scores, "ids": seen[-len(args["pairs"]):]}
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flag-python", default=str(ROOT / ".flagvenv" / "bin" / "python"))
    args = parser.parse_args()
    from helpers import LONG_EN, PAIRS
    from test_llm_parity import flag_llm_reranker_reference

    from rerankd import Reranker
    from rerankd.testing import make_causal_test_model

    pairs = [list(p) for p in [*PAIRS, (LONG_EN[:300], LONG_EN)]]
    cases = [(512, None, None), (48, 12, "Is B relevant to A? Yes or No.")]
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        model = make_causal_test_model(Path(tmp) / "gemma", shape="tiny", arch="gemma")
        for max_length, query_max_length, prompt in cases:
            request = {"model": str(model), "pairs": pairs, "max_length": max_length,
                       "query_max_length": query_max_length, "prompt": prompt}
            flag = json.loads(subprocess.run([args.flag_python, "-c", FLAG_SIDE, json.dumps(request)], check=True,
                                             capture_output=True, text=True).stdout.splitlines()[-1])
            ours = Reranker(str(model), device="cpu", max_length=max_length, query_max_length=query_max_length)
            encoded = ours.encoder.encode_pairs([tuple(p) for p in pairs], **({"instruction": prompt} if prompt else {}))
            our_ids = sorted(tuple(p.input_ids) for p in encoded)
            for normalize in (False, True):
                mine = ours.compute_score([tuple(p) for p in pairs], normalize=normalize, instruction=prompt)
                transcribed = flag_llm_reranker_reference(model, pairs, max_length, query_max_length, prompt,
                                                          normalize)
                for batch_size in (1, 128):
                    run = flag[f"{normalize}-{batch_size}"]
                    assert sorted(map(tuple, run["ids"])) == our_ids, "FlagEmbedding fed the model other ids"
                    diff_ours = max(abs(a - b) for a, b in zip(mine, run["scores"]))
                    diff_transcribed = max(abs(a - b) for a, b in zip(transcribed, run["scores"]))
                    worst = max(worst, diff_ours, diff_transcribed)
                    print(f"max_length={max_length} normalize={normalize} batch_size={batch_size}: ids equal; "
                          f"max |score diff| rerankd {diff_ours:.2e}, transcription {diff_transcribed:.2e}")
    print(f"worst score difference {worst:.2e} (FlagEmbedding's left padding shifts rotary positions)")


if __name__ == "__main__":
    main()
