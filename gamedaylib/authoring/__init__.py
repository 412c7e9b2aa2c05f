"""From a written playbook to a gameday: the playbook's markdown read as data (``markdown``), its metrics'
written targets (``threshold``), and the package skeleton ``gameday new`` writes (``skeleton``, ``cli``)."""
