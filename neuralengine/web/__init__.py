"""``neuralengine serve``: a local analysis board in the browser.

* :mod:`~neuralengine.web.models`: the models the page may use (the shipped
  weights, files named on the command line, DeepMind's downloaded models) and
  the one evaluation worker that owns the loaded engines;
* :mod:`~neuralengine.web.review`: game review (one batched evaluation per
  position, Lichess's inaccuracy, mistake and blunder thresholds);
* :mod:`~neuralengine.web.payloads`: positions, analyses and the JSON the page reads;
* :mod:`~neuralengine.web.app`: the Starlette application (HTTP routes, body
  limit, JSON errors);
* :mod:`~neuralengine.web.serve`: the command (uvicorn on 127.0.0.1);
* ``static/``: the page (HTML, JavaScript and CSS, no build step).

Only :mod:`~neuralengine.web.app` and :mod:`~neuralengine.web.serve` need the
``web`` extra (Starlette, uvicorn); the rest uses the core dependencies.
"""
