"""What is made of evaluations and runs: sources side by side
(:mod:`~natlearn.evaluate.reports.compare`), transfer along training
(:mod:`~natlearn.evaluate.reports.evolution`), figures (:mod:`~natlearn.evaluate.reports.figures`),
a run's report (:mod:`~natlearn.evaluate.reports.report`), its TensorBoard
(:mod:`~natlearn.evaluate.reports.board`), and features written for other tools
(:mod:`~natlearn.evaluate.reports.embedding`)."""
