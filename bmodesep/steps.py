"""What a stage function declares about its command line: the marker and argument types.

A stage function (``bmodesep/stages/<stage>.py``) that a rule runs is marked ``@step``;
its signature is the command line's one declaration (:mod:`bmodesep.cli` reads it with
:mod:`ast`, without importing the stage, so ``--help`` stays instant):

* ``config``: the step takes ``--config FILE...`` (the resolved stage config); a step
  without it (a figure) depends on its products alone;
* ``Name`` (a simulation, zone, method, compression or set), ``File`` (a path), ``int``;
  ``list[...]`` takes one or more values; ``... | None`` is optional; an ``int`` with a
  default is optional and takes that default;
* the first line of the docstring, less its ``Rule <name>:`` prefix, is the step's help.

This module is imported by every stage and by nothing heavy: keep it free of imports.
"""

Name = str  # a name from the config: simulation, zone, method, compression, set
File = str  # the path of an input or output file


def step(function):
    """Mark a stage function as a step of the command line (and a rule's command)."""
    function.__bmodesep_step__ = True
    return function
