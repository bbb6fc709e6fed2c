"""Research tools that look inside the network (``neuralengine probe``).

Nothing on the playing path (engine, UCI, backends) imports this package; it
needs PyTorch (the ``research`` extra) and, for plots, matplotlib.
"""
