"""``launch.py`` with a fault injected: ``python tests/reliability/fault_launch.py --kill_in_save=STEP <launch flags>``
SIGKILLs the process while Orbax commits the checkpoint of STEP (its data written to the temporary folder, the
rename that makes it a checkpoint not yet done): the worst moment for a kill during a save."""

import os
import signal
import sys

from orbax.checkpoint._src.path import atomicity

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)


def _kill_in_save(step: int) -> None:
    for cls in (atomicity.AtomicRenameTemporaryPath, atomicity.CommitFileTemporaryPath):
        original = cls.finalize

        async def finalize(self, *args, _original=original, **kwargs):
            if os.path.basename(str(self.get())).startswith(f"{step}.orbax-checkpoint-tmp"):
                os.kill(os.getpid(), signal.SIGKILL)
            return await _original(self, *args, **kwargs)

        cls.finalize = finalize


if __name__ == "__main__":
    argv = [arg for arg in sys.argv if not arg.startswith("--kill_in_save=")]
    for arg in sys.argv:
        if arg.startswith("--kill_in_save="):
            _kill_in_save(int(arg.split("=", 1)[1]))
    import launch
    from absl import app

    sys.argv = [os.path.join(REPO, "launch.py"), *argv[1:]]
    app.run(launch.main)
