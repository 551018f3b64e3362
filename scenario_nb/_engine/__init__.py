"""The engine: sends each request once, follows its job, stores its outputs and records every step.

One engine per client, a few daemon worker threads whatever the number of jobs. The history is a
write-ahead ledger: a request is recorded before it leaves, its job id as soon as it is known, and its end
with its outputs; if the history cannot be written, nothing is sent.

Each job is polled near its predicted completion rather than on a fixed beat (`_timing`). A poll is one GET,
never retried in place (`_poller`). A request refused with 429 waits here, in order, until the creation gate
opens; polls never wait on it (`_sender`). A request whose answer was lost is looked for in `GET /jobs` for at
least a minute before it is called unknown, and never called "not charged" unless the server proved it; it
adopts only a job the server made after its intent was recorded, the earliest such (`_search`).

The parts, each in its own module and handed what it uses when built (none holds the client):

- `_lanes.Lanes`: worker threads by lane (poll, fetch, send) running timed tasks.
- `_clock.Clock`: the time every part schedules by (the system's, unless a test passes one it moves).
- `_live.LiveRequests`: the requests in flight and each one's poll bookkeeping; `_live.Settings`: timings.
- `_ledger.Ledger`: history writes (before sending, after every step) and the end of a request.
- `_timing.PollTiming`: when a job is worth asking about (durations, cold cohorts, next delay);
  `_timing.ServerClock`: how far this machine's clock is ahead of the server's, at most.
- `_poller.Poller`: adopts jobs and polls them; hands successes to the completer.
- `_completer.Completer`: downloads and stores a succeeded job's outputs, then ends its handle.
- `_search.LostAnswerSearch`: finds (and adopts) the job of a request whose answer was lost.
- `_sender.Sender`: sends each request once; the 429 hold queue; `_sender.JobSlots`: the parallel-job limit a
  429 named, probed again after a quiet while.
- `_recovery.Recovery`: re-attaches jobs by id and recovers unfinished requests from the history.
- `_trainings.TrainingFollower`: starts, follows, cancels and recovers trainings.
- `_workbench.Workbench`: what is paid on the way to a training: the model, captions, uploads, the start.
- `_engine.Engine`: wires them, behind the interface the client and the handles use.
"""

from ._clock import Clock
from ._engine import Engine, lane_sizes
from ._live import SEARCH_SECONDS
from ._timing import DurationModel, server_duration

__all__ = ["Clock", "Engine", "lane_sizes", "DurationModel", "server_duration", "SEARCH_SECONDS"]
