"""Sweeps and searches: a grid's jobs planned and checked (``grid``), one parent run's
lifecycle (``parent_run``), a search's space (``dimensions``) and study (``studies``), and
Hydra's internals behind one adapter (``hydra_adapter``)."""
