"""Everything that touches the towns' databases, through a target (see target.py): the lab is one target, real
hosts another. Pure parts (topology, host variables, parsing of answers) are apart from the modules that run
processes or ask services.
"""
