"""The data layer of kumiai: layout of the lab, Ansible inventory, secrets, playbook runs and status queries.

Pure parts (layout and addressing, the Ansible inventory, parsing of status answers) live in layout.py,
ansible_inventory.py and status.py (parse_*); the modules that start processes or touch files are runner.py,
secrets.py, slots.py, deps.py, supervisor.py and status.py (gather_*). lifecycle.py strings them together into
what `kumiai lab up/down` and `kumiai onboard` do.
"""
