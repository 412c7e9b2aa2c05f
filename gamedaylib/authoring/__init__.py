"""From a written playbook to a gameday: the playbook's markdown read as data (``markdown``), its metrics'
targets (``threshold``)."""
