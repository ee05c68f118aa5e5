"""Noise As Targets, the paper's method, in one folder.

The core, usable in any training loop (it imports torch, numpy and scipy, nothing else of
natlearn's but its errors): :mod:`natlearn.nat.targets` (fixed noise targets regenerated from
their index), :mod:`natlearn.nat.assignment` (the image -> target permutation, its in-batch
Hungarian re-assignment and the global batch's solve under torchrun), :mod:`natlearn.nat.loss`
(square loss, softmax variant). Built on them: :mod:`natlearn.nat.objective` (what a training step
optimises: NAT, or the supervised baseline on the same network) and :mod:`natlearn.nat.module`
(:class:`~natlearn.nat.module.NATLoss`, all of it as one loss module).
"""
