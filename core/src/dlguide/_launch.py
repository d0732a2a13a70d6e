"""``dlguide run/resume --nproc-per-node N``: the command starts itself again under PyTorch's
own launcher, ``torch.distributed.run`` (torchrun), once per process.

    dlguide run vision.classify --nproc-per-node 2                        # one machine
    dlguide run TASK --nnodes 2 --node-rank 0 --rdzv-endpoint HOST:29400 --nproc-per-node 4   # on each node
    dlguide run TASK --nproc-per-node 2 --max-restarts 1   # a failed worker: all restart from the last checkpoint

Started under torchrun already (``torchrun ... -m dlguide run ...``), a command runs as it is:
torchrun's environment (``LOCAL_RANK``, ``WORLD_SIZE``) makes the run use the ddp strategy.
"""

from __future__ import annotations

import argparse
import os
import signal
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from dlguide._errors import DlguideError, UsageError

LAUNCHED = "DLGUIDE_LAUNCHED"
FLAGS = ("--nproc-per-node", "--nnodes", "--node-rank", "--rdzv-endpoint", "--max-restarts")


class WorkerFailed(DlguideError):
    """A worker process of a distributed run failed; its own error line was printed above."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_launch_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("distributed training (torch.distributed.run)")
    group.add_argument("--nproc-per-node", type=int, default=1, metavar="N",
                       help="processes on this machine, one per device (default 1)")
    group.add_argument("--nnodes", type=int, default=1, metavar="M", help="machines taking part (default 1)")
    group.add_argument("--node-rank", type=int, default=0, metavar="R", help="this machine's index among them")
    group.add_argument("--rdzv-endpoint", metavar="HOST:PORT",
                       help="where the machines meet (c10d rendezvous on the first machine)")
    group.add_argument("--max-restarts", type=int, default=0, metavar="K",
                       help="when a worker fails, restart every worker up to K times; they continue "
                            "from the last checkpoint (default 0)")


def wants_launch(args: argparse.Namespace) -> bool:
    """Whether this command must start its workers (several asked for, none running yet)."""
    if args.nproc_per_node < 1 or args.nnodes < 1:
        raise UsageError(f"--nproc-per-node {args.nproc_per_node} and --nnodes {args.nnodes}: expected counts >= 1")
    if args.max_restarts < 0:
        raise UsageError(f"--max-restarts {args.max_restarts}: expected a count >= 0")
    if args.nnodes > 1 and not args.rdzv_endpoint:
        raise UsageError(f"--nnodes {args.nnodes} needs --rdzv-endpoint HOST:PORT, the same on every machine")
    return (args.nproc_per_node > 1 or args.nnodes > 1) and "LOCAL_RANK" not in os.environ


def worker_argv(argv: Sequence[str]) -> list[str]:
    """The command line without the launcher's own flags (``--flag V`` and ``--flag=V``)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in FLAGS:
            skip = True
        elif not arg.startswith(tuple(f"{flag}=" for flag in FLAGS)):
            out.append(arg)
    return out


def launch(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Run this command once per process under torchrun; the first worker failure is the error."""
    import logging

    # the workers share this machine's cores (torchrun would set 1 thread each, with a warning),
    # and a failed worker is reported here in one line, not in torchrun's log
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.nproc_per_node)))
    os.environ.setdefault("LOGLEVEL", "ERROR")  # torch.distributed.elastic's loggers read it
    os.environ[LAUNCHED] = "1"  # the workers leave the summary of an interrupt to this process
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    worker = worker_argv(argv)
    if args.command == "run":
        where = args.out
        if where is None:  # every worker, and every restart, writes the same run
            where = str(Path("runs") / args.task / datetime.now().strftime("%Y%m%d-%H%M%S-%f"))
            worker += ["--out", where]
    else:
        where = args.run_dir
    torchrun = [f"--nproc-per-node={args.nproc_per_node}", f"--nnodes={args.nnodes}",
                f"--max-restarts={args.max_restarts}"]
    if args.rdzv_endpoint:
        torchrun += ["--rdzv-backend=c10d", f"--rdzv-endpoint={args.rdzv_endpoint}", "--rdzv-id=dlguide",
                     f"--node-rank={args.node_rank}"]
    else:
        torchrun.append("--standalone")
    flags = f" --nproc-per-node {args.nproc_per_node}" + (f" --nnodes {args.nnodes}" if args.nnodes > 1 else "")
    try:
        run(get_args_parser().parse_args([*torchrun, "--module", "dlguide", *worker]))
    except SignalException as exc:  # torchrun passed the signal on: each worker saved at the same step
        name = signal.Signals(exc.sigval).name
        raise WorkerFailed(f"{name} received; the workers saved a checkpoint in {where}; continue with: "
                           f"dlguide resume {where}{flags}", 128 + int(exc.sigval)) from None
    except ChildFailedError as exc:
        rank, failure = first_failure(exc.failures)
        code = failure.exitcode or 1
        if code < 0:  # killed by a signal (out of memory, a node going down): no error of its own to print
            hint = ""
            if (Path(where) / "checkpoints" / "last.ckpt").is_file():
                hint = f"; continue from its last checkpoint with: dlguide resume {where}{flags}"
            raise WorkerFailed(f"worker {rank} of the distributed run was killed by {signal_name(-code)}{hint}",
                               1) from None
        raise WorkerFailed(f"worker {rank} of the distributed run failed with exit code {code} "
                           "(its error is above)", code) from None
    return 0


def first_failure(failures: dict[int, Any]) -> tuple[int, Any]:
    """The worker whose failure brought the others down, then the earliest.

    A worker killed by a signal other than the SIGTERM torchrun sends the survivors comes first:
    its peers then fail in their next collective and exit 1, sometimes before torchrun has
    recorded the kill. Then one that raised (a positive exit code), then the SIGTERMed survivors.
    """
    def cause(item: tuple[int, Any]) -> tuple[int, float, int]:
        rank, failure = item
        code = failure.exitcode or 0
        kind = 1 if code > 0 else (0 if code != -int(signal.SIGTERM) else 2)
        return kind, failure.timestamp, rank

    return min(failures.items(), key=cause)


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
