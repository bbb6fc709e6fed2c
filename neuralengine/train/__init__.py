"""The trainer (``neuralengine train``): action-value models learnt from shards.

One module per job, in the order a run uses them:

* :mod:`~neuralengine.train.data`: batches drawn from the memory-mapped shards;
* :mod:`~neuralengine.train.losses`: the per-move loss and the ranking loss;
* :mod:`~neuralengine.train.metrics`: held-out evaluation and ``metrics.csv``;
* :mod:`~neuralengine.train.checkpoint`: checkpoints, ``--init`` and the exported model;
* :mod:`~neuralengine.train.loop`: the training loop, alone or under torchrun (DDP);
* :mod:`~neuralengine.train.plot`: ``metrics.png``, when matplotlib is installed;
* :mod:`~neuralengine.train.cli`: the command line (``python -m neuralengine.train``,
  ``torchrun ... -m neuralengine.train``, ``neuralengine train``).

Nothing on the playing path (``uci``, ``engine``, ``backends``) imports this package.
"""
