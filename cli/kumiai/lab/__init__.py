"""The data layer of kumiai: layout of the lab, Ansible inventory, secrets, playbook runs and status queries.

Pure parts (layout, addressing, the Ansible inventory, parsing of status answers) live in layout.py,
ansible_inventory.py and status.py; the modules that start processes or touch files are runner.py,
secrets.py, slots.py, deps.py and supervisor.py.
"""
