"""Learned particle simulators (GNS): the training procedure, rollouts, metrics and animations.

:mod:`graphdl.simulate.core` holds the procedure (noise, targets, integrator, rollouts,
metrics), :mod:`graphdl.simulate.render` the animations, and the ``simulate`` task
(:mod:`graphdl.train.tasks.simulate`) and ``graphdl rollout`` drive them.
"""
