"""How the entry points' processes run, stop and die: the one wrapper of every command line
(``entry``), stop signals and the launcher's death (``stopping``), the launcher's workers
(``workers``), process settings (``settings``) and one-line errors (``errors``)."""
