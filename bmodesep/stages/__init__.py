"""One module per rule file (``workflow/rules/<stage>.smk``), one function per rule.

Each function takes the resolved config, its input paths and its output path(s), reads
products, computes with :mod:`bmodesep.core`, writes products.  Stages never import each
other; ``bmodesep <stage> <step>`` (:mod:`bmodesep.cli`) calls them.
"""
