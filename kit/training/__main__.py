"""The train stage from the command line, on one process or several (DDP):

    python -m kit.training tiny-demo RUN                             # one process
    torchrun --nproc_per_node 2 -m kit.training tiny-demo RUN         # two (GPUs, or CPU with gloo)
    accelerate launch --num_processes 2 -m kit.training tiny-demo RUN

The same steps as the train notebook (``kit.training.train.train``) on a run prepare made. Every
process trains on its share of each batch; rank 0 alone writes the run's records and the adapter.
"""

from __future__ import annotations

import argparse
import sys

from kit import distributed, runlog
from kit.recipes import RecipeError, override_argument, override_arguments
from kit.runs import find_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kit.training", description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", help="recipe name or YAML path (as given to prepare)")
    # The run is positional: torchrun reads "--run" as an abbreviation of its own --run-path.
    parser.add_argument("run", nargs="?", default="", help="run id or directory (default: the recipe's newest run)")
    parser.add_argument(
        "-o",
        "--override",
        action="append",
        type=override_argument,
        default=[],
        metavar="KEY=VALUE",
        help="override of the train / lora / eval / export sections; repeatable",
    )
    parser.add_argument("--resume", default="auto", help="auto (default), true, false or a checkpoint name")
    args = parser.parse_args(argv)
    try:
        overrides = override_arguments(args.override)
    except RecipeError as e:
        parser.error(f"argument -o/--override: {e}")  # one line, exit status 2, as argparse's own errors
    from kit.training import train  # imports Unsloth: after argument errors, which need none of it

    try:
        run = find_run(args.recipe, args.run or None)
        config = run.apply_overrides(overrides or None, stage="train")
        summary = train.train(run, config, resume=args.resume)
    except Exception as e:  # the kit's errors as one line, as in the notebooks; others with their traceback
        if not runlog.is_kit_error(type(e)):
            raise
        print(f"[train] rank {distributed.rank()}: {runlog.one_line(type(e), e)}", file=sys.stderr)
        return 1
    if distributed.is_main():
        print(
            f"[train] {run.path}: step {summary['global_step']}, eval loss {summary['eval_loss']:.4f}, "
            f"{summary['world_size']} process(es), global batch {summary['global_batch']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
