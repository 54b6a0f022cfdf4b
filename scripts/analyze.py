"""Look inside a causal LM. One analysis so far, `induction`: the induction scores of every attention head.

    python scripts/analyze.py induction --model_name_or_path outputs/gpt-stdlib --output_dir outputs/induction
    python scripts/analyze.py induction --model_name_or_path ~/.cache/hfssl/reference/SmolLM2-135M-Instruct \
        --seq_len 25 --num_sequences 2

Prints the top heads by prefix-matching score with their copying scores, and writes induction.json and a heat map,
induction.png, into --output_dir. The scores are defined in hfssl/analysis/induction.py (docs/induction-heads.md);
`python scripts/analyze.py induction --help` lists every flag.
"""

import sys

import hfssl  # noqa: F401  (registers the hfssl models)
from hfssl.analysis.report import JSON_FILE, PNG_FILE, InductionArguments, format_table, run_induction
from hfssl.run.arguments import parse_cli
from hfssl.run.cli import run_cli

ANALYSES = {"induction": InductionArguments}
USAGE = "usage: analyze.py {" + ",".join(ANALYSES) + "} [flags]   (analyze.py induction --help lists its flags)"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):  # the flags of the (only) analysis
        print(USAGE)
        argv = ["induction", *argv]
    if not argv or argv[0] not in ANALYSES:
        given = f"got {argv[0]!r}" if argv else "none given"
        print(f"{USAGE}\nerror: name an analysis first ({given}).", file=sys.stderr)
        return 2

    def run() -> None:
        args = parse_cli(InductionArguments, argv[1:])
        record = run_induction(args)
        print(f"{record['model']}: induction scores")
        print(format_table(record))
        written = [JSON_FILE] if args.no_heatmap else [JSON_FILE, PNG_FILE]
        print(f"wrote {', '.join(f'{args.output_dir}/{name}' for name in written)}")

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
