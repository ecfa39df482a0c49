"""The checkpoint layer: every checkpoint read and write of the project goes through here.

A checkpoint holds the training *state*, not just weights: step, epoch, model, every
optimizer (moments and loss scale included), the training-data iterator, the Keras RNG
states, the running training metrics of the epoch, the latest validation metrics and the
best-checkpoint ledger. Resuming from it continues the same run, bit for bit.

    state      TrainingState: what a checkpoint holds (one tf.train.Checkpoint)
    ledger     the best-k ranking
    files      a checkpoint's files and sidecar; is it intact?
    folder     one folder of checkpoints: save steps 1-4, pruning, quarantine
    store      latest/ and best/ of a run: save (optionally in the background) and restore
    snapshot   point-in-time copies for the background writer
    read       verified reads, weights only, operating points, finding a checkpoint by name
    lock       one training process per run directory

Folders of a run directory::

    latest/ckpt-<step>.{index,data-*}   the newest ``checkpoint.max_to_keep`` states
    latest/ckpt-<step>.meta.json        sidecar: step, metrics, hashes, versions; written
                                        after the data, so it marks a complete checkpoint
    latest/checkpoint                   TF's state file, for TF tools; never trusted here
    best/...                            the same for the top ``checkpoint.keep_best`` states
    quarantine/                         damaged checkpoints moved out of the way

Save order (a kill at any point leaves the previous checkpoints usable):
  1. Refuse non-finite weights: they never reach disk.
  2. ``tf.train.Checkpoint.write``: TF writes temp files and renames them.
  3. Hash the files and write the sidecar (temp file, fsync, rename): now it exists.
  4. Update TF's state file, then delete checkpoints beyond the limit (sidecar first).
With ``checkpoint.background`` on, step 1 and a snapshot of every value (``snapshot``) run
on the training thread and steps 2-4 on a writer thread, one write in flight at a time.
Where TensorFlow lacks the internals the snapshot uses, every save is synchronous (one
warning says so).

Multi-worker training (``trainer.strategy=multi_worker``): only the chief (worker 0)
writes the run directory. Every other worker writes the same state into a temporary
folder and deletes it (a save may need all workers), and restores read-only from the
chief's checkpoints: the newest intact one, without quarantining or rewriting anything.

Restore order (each step needs the one before it):
  1. Set the dtype policy, then build the model from the run's config.
  2. Build every optimizer on its variables. Keras 3 creates moment variables lazily;
     unbuilt, their saved values would wait in deferred restoration, where nothing can
     check them, and ``assert_consumed()`` would fail on a good checkpoint.
  3. Create the training-data iterator; its position is part of the state.
  4. Pick the newest checkpoint whose sidecar exists and whose files match its SHA-256;
     damaged ones are reported by name and quarantined.
  5. Read it, then verify: every saved value consumed, every live object matched. A
     mismatch names the first differing variable and the config values that differ.
  6. Train from ``step + 1``.
"""

from retina.checkpoint.files import damage, read_sidecar
from retina.checkpoint.ledger import rank
from retina.checkpoint.lock import RunLock
from retina.checkpoint.read import (
    find_checkpoint,
    read_operating_points,
    resolve_checkpoint,
    restore_weights,
)
from retina.checkpoint.state import TrainingState, weights_fingerprint
from retina.checkpoint.store import CheckpointStore

__all__ = [
    "CheckpointStore",
    "RunLock",
    "TrainingState",
    "damage",
    "find_checkpoint",
    "rank",
    "read_operating_points",
    "read_sidecar",
    "resolve_checkpoint",
    "restore_weights",
    "weights_fingerprint",
]
