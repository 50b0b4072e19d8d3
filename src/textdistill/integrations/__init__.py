"""textdistill inside the tools people already train with: :mod:`textdistill.integrations.transformers`
(``DistillationTrainer``, a ``transformers.Trainer``)."""
