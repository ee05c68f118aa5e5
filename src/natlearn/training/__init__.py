"""Training infrastructure around the method (:mod:`natlearn.nat`): the loop
(:mod:`~natlearn.training.trainer`: ``train``, ``run_epoch``, ``train_step``), a run's pieces set up
once (:mod:`~natlearn.training.run`), run folders and checkpoints
(:mod:`~natlearn.training.checkpoint`), torchrun ranks (:mod:`~natlearn.training.distributed`), how
the step runs on its device (:mod:`~natlearn.training.devices`), non-finite batches
(:mod:`~natlearn.training.nonfinite`), metric loggers (:mod:`~natlearn.training.loggers`) and the
reliability tests' fault points (:mod:`~natlearn.training.faults`).

Nothing is imported here; ``natlearn.train`` (the function) is
:func:`natlearn.training.trainer.train`.
"""
