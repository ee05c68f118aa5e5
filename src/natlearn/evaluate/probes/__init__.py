"""Frozen-feature probes and ``natlearn eval``: the linear probe
(:mod:`~natlearn.evaluate.probes.linear`), k-NN (:mod:`~natlearn.evaluate.probes.knn`), the MLP
(:mod:`~natlearn.evaluate.probes.mlp`), full fine-tuning
(:mod:`~natlearn.evaluate.probes.finetune`) and Coates & Ng's hand-crafted features
(:mod:`~natlearn.evaluate.probes.handcrafted`); the table of protocols, from which the flags,
settings and summary are derived (:mod:`~natlearn.evaluate.probes.protocols`), the suite that runs
them on a source's features (:mod:`~natlearn.evaluate.probes.suite`), a source's features
(:mod:`~natlearn.evaluate.probes.scoring`), and one evaluation of a source with its files
(:mod:`~natlearn.evaluate.probes.run`)."""
