"""Chunks streaming through the frame stages: base video → face swap → lip sync → encode.

Each chunk moves to its next stage as soon as its current one is done, so chunk k can be in
lip sync while chunk k+1 is in face swap. A job keeps at most `window` chunks in flight (its
backpressure: the object store holds a few chunks of a job, never all of them). Frames pass
from stage to stage as handles (Ray object references), never through this process. Before
every call the job is checked to be still wanted (cancellation, withdrawn consent), and the
first failure stops the job's other chunks at their next call.

Every call's timing keeps when it was asked for and its chunk, so a stage's wall time (its
first call asked → its last answered) and the job's critical path can be told apart later.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any

from cameofarm.actors.pools import StageCallError, StagePools
from cameofarm.configs import StageName
from cameofarm.monitoring.timing import CallTiming

FRAME_STAGES = (
    StageName.BASE_VIDEO,
    StageName.FACE_SWAP,
    StageName.LIP_SYNC,
    StageName.COMPOSITE,
)


# Copies of a chunk's frames a job holds in the object store at most while the chunk
# streams: those a stage reads and those it writes (the reader's are released as the call
# answers, before the next stage is asked).
COPIES_PER_CHUNK = 2
# Times a chunk's chain is run again from its first step when a call's input (frames another
# stage made) was lost with the node that held it; then the job is queued again.
CHUNK_REMAKES = 2

log = logging.getLogger("cameofarm.render")


def job_store_bytes(width: int, height: int, chunk_frames: int, chunks_in_flight: int) -> int:
    """The most of Ray's object store one job's streaming frames hold (RGB, 8 bits)."""
    return width * height * 3 * chunk_frames * chunks_in_flight * COPIES_PER_CHUNK


@dataclass(frozen=True)
class Step:
    """One call of a chunk's chain: the stage, the actor method, and its arguments with the
    chunk's frames from the step before in place of `FRAMES` (none for the first step). A
    `side` step reads the frames without changing them (a measurement): its answer is kept
    apart and the next step gets the same frames."""

    stage: StageName
    method: str
    args: tuple[Any, ...]
    side: bool = False


FRAMES = object()  # stands for the frames the step before produced


class StreamCancelled(RuntimeError):
    """The job stopped wanting its chunks (`still_wanted` said no) before `stage`."""

    def __init__(self, stage: StageName) -> None:
        super().__init__(stage.value)
        self.stage = stage


@dataclass
class StreamProgress:
    """Calls done per stage out of the calls it makes, reported as they change (in order:
    one report at a time, so a stage's counts never go back)."""

    totals: dict[StageName, int]
    report: Callable[[StageName, int, int], None]
    done: dict[StageName, int] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def start(self) -> None:
        for stage, total in self.totals.items():
            self.done.setdefault(stage, 0)
            self.report(stage, self.done[stage], total)

    def one_more(self, stage: StageName) -> None:
        with self._lock:
            self.done[stage] = self.done.get(stage, 0) + 1
            self.report(stage, self.done[stage], self.totals[stage])

    def earliest_unfinished(self) -> StageName | None:
        """The first stage in pipeline order with calls still to answer."""
        with self._lock:
            for stage in FRAME_STAGES:
                if self.done.get(stage, 0) < self.totals.get(stage, 0):
                    return stage
        return None


@dataclass
class StreamResult:
    """Each chunk's last handle (its encoded segment) in chunk order, its side steps' answers
    (handles, in step order), and every call's timing by stage."""

    outputs: list[Any]
    sides: list[list[Any]]
    calls: dict[StageName, list[CallTiming]]
    started_at: float


def stream_chunks(
    pools: StagePools,
    chains: Sequence[Sequence[Step]],
    window: int,
    still_wanted: Callable[[], bool],
    progress: StreamProgress,
    name: str = "chunk",
    priority: tuple[float, ...] = (),
    stop: threading.Event | None = None,
) -> StreamResult:
    """Run each chunk's chain of steps, at most `window` chunks at once; return the last
    step's handle of every chunk, in order. At a replica, a chunk's calls wait their turn by
    `priority` and then the chunk's index. A chunk whose input frames were lost with their
    node is made again from its first step (CHUNK_REMAKES times). Raises StreamCancelled when
    the job stopped being wanted, or the first call's error (StageCallError) after stopping
    the rest; `stop` is set then (set it to stop the stream)."""
    calls: dict[StageName, list[CallTiming]] = {s: [] for s in FRAME_STAGES}
    lock = threading.Lock()
    stop = stop or threading.Event()

    sides: list[list[Any]] = [[] for _ in chains]
    counted = [0] * len(chains)  # steps of each chunk counted in the progress

    def run(chunk: int, chain: Sequence[Step]) -> Any:
        remade, because = 0, None
        while True:
            try:
                return run_chain(chunk, chain, because)
            except BaseException as exc:
                if isinstance(exc, StageCallError) and exc.lost_input and remade < CHUNK_REMAKES:
                    remade += 1
                    log.warning("chunk %d: %s; making it again from its first step", chunk, exc)
                    because = f"{exc}; the chunk was made again from its first step"
                    sides[chunk] = []
                    continue
                stop.set()  # the other chunks stop at their next call
                raise

    def run_chain(chunk: int, chain: Sequence[Step], because: str | None) -> Any:
        """One run of a chunk's chain; `because`: why it is run again (its first call's
        history says so, as a retried call's does)."""
        frames: Any = None
        made_by: str | None = None  # the replica that made `frames`
        for index, step in enumerate(chain):
            if stop.is_set() or not still_wanted():
                stop.set()
                raise StreamCancelled(step.stage)
            args = tuple(frames if a is FRAMES else a for a in step.args)
            asked = time.time()
            out, timings = pools.map(
                step.stage, step.method, [args], priority=(*priority, chunk), near=made_by
            )
            again = (because,) if because and index == 0 else ()
            with lock:
                calls[step.stage] += [
                    replace(t, submitted_at=asked, chunk=chunk, retried=(*t.retried, *again))
                    for t in timings
                ]
            if index >= counted[chunk]:  # a chunk made again is not counted twice
                counted[chunk] = index + 1
                progress.one_more(step.stage)
            if step.side:
                sides[chunk].append(out[0])
            else:
                frames = out[0]
                made_by = timings[-1].replica if timings else None
        return frames

    started = time.time()
    progress.start()
    # Each chunk's thread runs in a copy of this context: its log records name the job.
    with ThreadPoolExecutor(max_workers=max(1, window), thread_name_prefix=name) as pool:
        futures: list[Future[Any]] = [
            pool.submit(contextvars.copy_context().run, run, k, chain)
            for k, chain in enumerate(chains)
        ]
        _, pending = wait(futures, return_when=FIRST_EXCEPTION)
        if pending:  # one failed: the others stop at their next call, queued ones never start
            stop.set()
            for future in pending:
                future.cancel()
            wait(futures)
        errors = [
            error for f in futures if not f.cancelled() and (error := f.exception()) is not None
        ]
        if errors:  # the failure itself, not the chunks it stopped
            raise next((e for e in errors if not isinstance(e, StreamCancelled)), errors[0])
        outputs = [f.result() for f in futures]
    return StreamResult(outputs, sides, calls, started)
