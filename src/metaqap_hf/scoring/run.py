"""One scoring run, the library behind `metaqap score`: inputs -> `ImageScorer` -> rows written as they come, with
`resume`, clean interrupts and several processes.

Several processes: under a launcher that sets RANK and WORLD_SIZE (`torchrun`, `accelerate launch --multi_gpu`, or
MPI's variables), input number i goes to process i % WORLD_SIZE, so each is scored exactly once. Each process
streams its rows, with their input numbers, into ``OUTPUT.part-RANK-of-WORLD`` beside `output`; when all are done
(a gloo process group; `output` must be on a filesystem they share), process 0 merges the parts into `output` in
input order and removes them. An interrupted or killed run leaves the parts; `resume` reads them and the merge of
the finished run includes them. Two processes that do not know of each other cannot both write one `output`: it is
locked.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from .inputs import ImageInput, ImageInputs
from .options import OptionError, check_counts
from .output import STDOUT, KeySet, ResultWriter, choose_format, merged_rows, read_rows
from .scorer import ImageScorer, ScoredImage

__all__ = ["ProcessGroup", "ScoringInterrupted", "ScoringRun", "score_to_output"]

_MERGE_BATCH = 256
_ENV_RANKS = (("RANK", "WORLD_SIZE"), ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"), ("PMI_RANK", "PMI_SIZE"),
              ("MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE"))


@dataclass
class ScoringRun:
    """What a run did (`rank`: this process's number among `processes`). `resumed`: inputs already in the output, not scored again; `clipped`: scores outside the
    MOS range, clipped (`raw_score` keeps them); `hidden`: entries in folders passed over (names starting with a
    dot); `parts`: part files left for a later `resume` (an interrupted run of several processes)."""

    output: str
    format: str
    processes: int = 1
    rank: int = 0
    mos_name: str = ""
    mos_range: tuple[float, float] = (0.0, 1.0)
    scored: int = 0
    skipped: int = 0
    resumed: int = 0
    clipped: int = 0
    hidden: int = 0
    interrupted: bool = False
    parts: list[str] = field(default_factory=list)


class ScoringInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM, where the caller turns it into KeyboardInterrupt) stopped a run; what was scored is
    written and `run` says how much."""

    def __init__(self, run: ScoringRun):
        super().__init__("interrupted")
        self.run = run


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place among the processes a launcher started (rank 0 of 1 without one)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def from_environment(cls) -> ProcessGroup:
        for rank_name, world_name in _ENV_RANKS:
            if os.environ.get(world_name):
                world, rank = int(os.environ[world_name]), int(os.environ.get(rank_name, "0"))
                if not 0 <= rank < world:
                    raise OptionError("processes", f"{rank_name}={rank}", f"{world_name} is {world}")
                return cls(rank, world)
        return cls()

    def join(self) -> bool:
        """Join (or reuse) the torch.distributed group; True when this call created it."""
        import torch.distributed as dist

        if self.world == 1 or dist.is_initialized():
            return False
        os.environ.setdefault("RANK", str(self.rank))  # MPI launchers name them differently
        os.environ.setdefault("WORLD_SIZE", str(self.world))
        dist.init_process_group("gloo", timeout=timedelta(days=7))  # a barrier waits for the slowest process
        return True

    def gather(self, value) -> list:
        import torch.distributed as dist

        if self.world == 1:
            return [value]
        gathered = [None] * self.world
        dist.all_gather_object(gathered, value)
        return gathered


def part_path(output: str, rank: int, world: int) -> Path:
    return Path(f"{output}.part-{rank}-of-{world}")


def _part_files(output: str) -> list[Path]:
    target = Path(output)
    return sorted(target.parent.glob(f"{target.name}.part-*-of-*"))


def _is_own_output(item: ImageInput, output: str | None) -> bool:
    """The results file (or a part of it) inside a folder being scored is not an input."""
    if output in (None, STDOUT) or item.problem or not isinstance(item.source, str):
        return False
    name, output_name = os.path.basename(item.source), os.path.basename(output)
    if name != output_name and not name.startswith(f"{output_name}.part-"):
        return False
    try:
        return os.path.samefile(os.path.dirname(item.source) or ".", os.path.dirname(output) or ".")
    except OSError:
        return False


def score_to_output(
    inputs: ImageInputs | Iterable[str | os.PathLike],
    output: str | os.PathLike | None = None,
    *,
    model: str | os.PathLike | None = None,
    device: str = "auto",
    dtype: str = "auto",
    runtime: str = "auto",
    batch_size: int = 8,
    num_workers: int = 0,
    format: str | None = None,
    resume: bool = False,
    top_k_faults: int | None = None,
    on_result: Callable[[ScoredImage], None] | None = None,
) -> ScoringRun:
    """Score `inputs` (an `ImageInputs`, or paths) with `model` (on `device`, in `dtype`, by `runtime`: see
    `ImageScorer`) and write the rows to `output` (a file, a pipe or device, or ``"-"``/None for standard output)
    in `format` (default: from `output`'s suffix, else a table) as they come. With `resume`, inputs already in
    `output` are skipped and the new rows appended. With `top_k_faults`, each row also names that many of the most
    probable faults (a model with a fault head).

    Every option is checked before any scoring (`OptionError`); `on_result` sees each `ScoredImage` (skipped ones
    too) as it comes. Returns the `ScoringRun`; Ctrl-C raises `ScoringInterrupted` carrying it, after the rows
    scored so far are written (and a json document completed).
    """
    check_counts(batch_size, num_workers)
    output = None if output is None else str(output)
    format = choose_format(format, output)
    inputs = inputs if isinstance(inputs, ImageInputs) else ImageInputs(inputs)
    if (output not in (None, STDOUT) and inputs.list_path not in (None, STDOUT) and os.path.exists(output)
            and os.path.samefile(output, inputs.list_path)):  # "-" (stdin) is no file to compare
        raise OptionError("output", output, "is the list of paths being read (files_from); give another file")
    group = ProcessGroup.from_environment()
    if group.world > 1 and output in (None, STDOUT):
        raise OptionError("output", output or STDOUT, f"{group.world} processes need a file to merge their rows into")
    run = ScoringRun(output or STDOUT, format, processes=group.world, rank=group.rank)
    skipped_names: list[tuple[str, str]] = []
    final = part = None
    created_group = False
    try:
        final = ResultWriter(output, format, resume=resume) if group.rank == 0 else None
        part = ResultWriter(str(part_path(output, group.rank, group.world)), "jsonl", resume=resume) \
            if group.world > 1 else None
        writer = part or final
        scorer = ImageScorer(model, device=device, dtype=dtype, runtime=runtime, top_k_faults=top_k_faults)
        created_group = group.join()
        run.mos_name, run.mos_range = scorer.config.mos_name, tuple(scorer.config.mos_range)
        info = {"model": scorer.model_path, "mos_name": run.mos_name, "mos_range": list(run.mos_range)}
        for destination in (final, part):
            if destination is not None:
                destination.begin(scorer.config.backbone_ids, info, with_index=destination is part,
                                  top_k_faults=top_k_faults)
        if final is not None and part is not None and not resume:  # parts of an earlier run with another count
            for stale in set(_part_files(output)) - {part_path(output, rank, group.world)
                                                     for rank in range(group.world)}:
                stale.unlink()
        done = _done_keys(output, format, final, resume, group)
        indices: deque[int] = deque()

        def todo() -> Iterable[ImageInput]:
            for index, item in enumerate(inputs):
                if index % group.world != group.rank or _is_own_output(item, output):
                    continue
                if item.key in done:
                    run.resumed += 1
                    continue
                indices.append(index)
                yield item

        for item in scorer.score(todo(), batch_size=batch_size, num_workers=num_workers):
            index = indices.popleft()
            if item.ok:
                with writer.held():  # a signal held during the write would otherwise land before the count
                    writer.write([item], [index])
                    run.scored += 1
                    run.clipped += item.score != item.raw_score
            else:
                run.skipped += 1
                if format == "json":
                    skipped_names.append((item.path, item.reason))
            if on_result is not None:
                on_result(item)
        run.hidden = inputs.stats.hidden
        if group.world == 1:
            final.finish(skipped_names)
            return run
        part.close()
        return _merge(run, final, group, skipped_names, final.done if final is not None and resume else None)
    except KeyboardInterrupt:
        run.interrupted, run.hidden = True, inputs.stats.hidden
        if final is not None and group.world == 1:
            final.finish(skipped_names)  # completes a json document; the other formats are complete already
        run.parts = [str(path) for path in _part_files(output)] if group.world > 1 else []
        raise ScoringInterrupted(run) from None
    finally:
        for destination in (final, part):
            if destination is not None:
                destination.close()
        if created_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _done_keys(output, format: str, final: ResultWriter | None, resume: bool, group: ProcessGroup) -> KeySet:
    """With `resume`: the inputs already in the output and in every part file (of any earlier process count)."""
    if not resume:
        return KeySet()
    done = final.done if final is not None else KeySet(
        row["path"] for row, _ in (read_rows(output, format) if os.path.isfile(output) else []) if "header" not in row)
    if group.world > 1:
        done = done.union(KeySet(row["path"] for path in _part_files(output) for row, _ in read_rows(path, "jsonl")))
    return done


def _merge(run: ScoringRun, final: ResultWriter | None, group: ProcessGroup, skipped_names: list,
           in_output: KeySet | None) -> ScoringRun:
    """After every process is done: totals from all, and process 0 merges the parts (rows already in the output,
    from an interrupted merge, are not repeated) and removes them."""
    counts = group.gather((run.scored, run.skipped, run.resumed, run.clipped, skipped_names))
    run.scored, run.skipped, run.resumed, run.clipped = (sum(entry[i] for entry in counts) for i in range(4))
    if final is None:
        group.gather(None)  # wait for the merge: a launcher stops every process once one has exited
        return run
    parts = _part_files(run.output)
    batch: list[ScoredImage] = []
    for item in merged_rows(parts):
        if in_output is None or item.path not in in_output:
            batch.append(item)
        if len(batch) == _MERGE_BATCH:
            final.write(batch)
            batch = []
    final.write(batch)
    final.finish([name for entry in counts for name in entry[4]], group.world)
    for path in parts:
        path.unlink()
    group.gather(None)
    return run
