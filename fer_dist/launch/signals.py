"""Preemption inside the workers: a signal becomes a checkpoint at the next step boundary.

Slurm sends its warning signal (submitit asks for USR2) to every process of the job step, workers
included. Its default action would kill them mid-step. Instead the handler only sets a flag; the
training loop asks `stop_requested()` at each step boundary, which ORs the flag over all ranks so
that every rank stops at the same step (a rank that stopped alone would leave the others waiting
forever in the next all_reduce).
"""
from __future__ import annotations

import signal
import threading

from fer_dist.errors import UserError
from fer_dist.train.dist import DistEnv, any_rank


class PreemptionFlag:
    """Set by a signal handler; read collectively by the training loop."""

    def __init__(self, signal_names: list[str]):
        self.received: str | None = None
        self._signals = [self._lookup(name) for name in signal_names]

    @staticmethod
    def _lookup(name: str) -> signal.Signals:
        try:
            return signal.Signals[name if name.startswith("SIG") else "SIG" + name]
        except KeyError:
            raise UserError(f"train.preempt_signals: unknown signal {name!r} (e.g. SIGUSR2)") from None

    def install(self) -> "PreemptionFlag":
        """Install the handlers (only possible from the main thread; elsewhere a no-op)."""
        if threading.current_thread() is threading.main_thread():
            for sig in self._signals:
                signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.received = signal.Signals(signum).name

    def stop_requested(self, env: DistEnv) -> bool:
        """True on all ranks once any rank got the signal. A collective: call it on every rank."""
        return any_rank(self.received is not None, env)
